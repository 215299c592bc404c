# Copyright (c) mmpsearch contributors. All rights reserved.
"""Scene descriptions and captions of the synthetic scenes, written from the
renderer's own choices (the clothing colours of :data:`.render.PALETTE`, the
pattern, the accessories, the dull clothes of passers-by, the base colours of
the background), not guessed from the pixels.

A caption reads e.g. ``"person in red shirts with green stripes and blue
pants with yellow hat, person in dull clothes, on grey ground by light grey
wall"``: one ``person`` clause per drawn person in annotation order, then the
background. It starts with the word ``person`` (the first token after the
start token), so that in a causal CLIP text encoder the embedding of that
token equals the one of DiffPS's prompt ``"person"`` (Kim et al., ICCV 2025,
Sec. 3.2): a text-conditioned diffusion model trained on these captions (see
``tools/misc/train_tiny_ldm.py``) has seen, in every scene, the very token
DiffPS's "person" cross-attention map reads.
"""
from typing import Dict, List, Optional, Sequence

from .render import PALETTE, Color, PersonLook

#: The file that ``make_synthetic(..., describe=True)`` writes at the root
#: of the dataset folder.
SCENES_FILE = 'scenes.json'

#: The words of the captions besides the colour names; a tokenizer that
#: should read captions as one token a word needs these and
#: :data:`.render.PALETTE`'s names (see :data:`CAPTION_WORDS`).
_GLUE_WORDS = ('person', 'in', 'and', 'with', 'shirts', 'pants', 'stripes',
               'band', 'hat', 'bag', 'dull', 'clothes', 'on', 'ground', 'by',
               'wall', 'dark', 'light', 'grey')

#: Every word a caption can hold.
CAPTION_WORDS = _GLUE_WORDS + tuple(PALETTE)

_BY_COLOUR: Dict[Color, str] = {bgr: name for name, bgr in PALETTE.items()}

#: What a passer-by (dull, unsaturated clothes) wears in a caption.
DULL = 'dull'


def palette_name(bgr: Color) -> str:
    """The :data:`.render.PALETTE` name of a clothing colour."""
    try:
        return _BY_COLOUR[tuple(int(c) for c in bgr)]
    except KeyError:
        raise ValueError(f'{bgr} is not a palette colour') from None


def grey_name(bgr: Color) -> str:
    """Name a dull background colour by its brightness (the background's
    colours have a saturation below 55 / 255, so they are greys)."""
    value = max(int(c) for c in bgr)
    if value < 110:
        return 'dark grey'
    if value < 170:
        return 'grey'
    return 'light grey'


def describe_look(look: PersonLook, labeled: bool) -> Dict[str, Optional[str]]:
    """The clothing of one person as words: ``upper``, ``lower`` (palette
    names, or :data:`DULL` for an unlabeled passer-by), ``pattern`` of the
    upper body, its ``accent`` colour (None when plain), ``hat`` and ``bag``
    colours (None when absent)."""
    if not labeled:
        return dict(
            upper=DULL,
            lower=DULL,
            pattern='plain',
            accent=None,
            hat=None,
            bag=None)
    plain = look.pattern == 'plain'
    return dict(
        upper=palette_name(look.upper),
        lower=palette_name(look.lower),
        pattern=look.pattern,
        accent=None if plain else palette_name(look.accent),
        hat=None if look.hat is None else palette_name(look.hat),
        bag=None if look.bag is None else palette_name(look.bag))


def person_phrase(person: Dict) -> str:
    """``"person in red shirts and blue pants"`` and the like."""
    if person['upper'] == DULL:
        return 'person in dull clothes'
    upper, accent = person['upper'], person.get('accent')
    pattern = person.get('pattern', 'plain')
    if pattern in ('hstripes', 'vstripes'):
        top = f'{upper} shirts with {accent} stripes'
    elif pattern == 'split':
        top = f'{upper} and {accent} shirts'
    elif pattern == 'band':
        top = f'{upper} shirts with {accent} band'
    else:
        top = f'{upper} shirts'
    phrase = f'person in {top} and {person["lower"]} pants'
    extras = [f'{person[k]} {k}' for k in ('hat', 'bag') if person.get(k)]
    if extras:
        phrase += ' with ' + ' and '.join(extras)
    return phrase


def scene_caption(scene: Dict,
                  persons: Optional[Sequence[Dict]] = None) -> str:
    """The caption of one scene description (an entry of
    :data:`SCENES_FILE`), of ``persons`` when given (e.g. those inside a
    crop), else of all its persons."""
    persons = scene['persons'] if persons is None else persons
    parts: List[str] = [person_phrase(p) for p in persons]
    parts.append(f'on {scene["ground"]} ground by {scene["wall"]} wall')
    return ', '.join(parts)
