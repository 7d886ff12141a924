"""The output size follows the portrait's aspect at a Wan resolution (multiples of 16)."""

import pytest

from fantasyportrait_core import FantasyPortraitError
from fantasyportrait_core.sizing import output_size


@pytest.mark.parametrize("image, resolution, expected", [
    ((1080, 1920), "480p", (464, 832)),    # a phone portrait stays portrait
    ((1920, 1080), "480p", (832, 464)),    # landscape stays landscape
    ((832, 480), "480p", (832, 480)),      # the native 480p size is kept
    ((480, 832), "480p", (480, 832)),
    ((512, 512), "480p", (624, 624)),      # square: about the same area
    ((1280, 720), "720p", (1280, 720)),
    ((1000, 1500), "720p", (768, 1168)),
])
def test_sizes_keep_the_aspect(image, resolution, expected):
    width, height = output_size(*image, resolution)
    assert (width, height) == expected
    assert width % 16 == 0 and height % 16 == 0
    assert abs(width / height - image[0] / image[1]) < 0.05 * image[0] / image[1]


def test_bad_sizes_are_refused():
    with pytest.raises(FantasyPortraitError, match="not one of 480p, 720p"):
        output_size(100, 100, "4k")
    with pytest.raises(FantasyPortraitError, match="too elongated"):
        output_size(10000, 10, "480p")
