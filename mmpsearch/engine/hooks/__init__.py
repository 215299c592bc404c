# Copyright (c) mmpsearch contributors. All rights reserved.
from .checkpoint_fit_hook import CheckpointFitHook
from .finite_loss_hook import FiniteLossHook, NonFiniteLossError
from .teacher_embeddings_hook import TeacherEmbeddingsCheckHook

__all__ = [
    'CheckpointFitHook', 'FiniteLossHook', 'NonFiniteLossError',
    'TeacherEmbeddingsCheckHook'
]
