# Copyright (c) mmpsearch contributors. All rights reserved.
