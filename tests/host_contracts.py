"""Host contracts that newer ComfyUI releases changed under the pack (the README's compatibility table), each
checked in a real ComfyUI in this process (run by tests/test_in_host.py with the host's Python). Where the
host running the test predates a contract, the test builds the newer object the way the newest read source
(cited per test) defines it."""

import inspect
import os
import types

import pytest

from conftest import ROOT
from media import media_path, model_path


@pytest.fixture(scope="module")
def H():
    from comfy_inproc import boot

    return boot(os.environ["COMFYUI_DIR"], ROOT)


# --- VIDEO: trim window and crop -------------------------------------------------------------------------------

def newer_video_class():
    """The host's VideoFromFile if it keeps a trim window and a crop, else a subclass that does, as
    Comfy-Org/ComfyUI 0c6cfff6 ``comfy_api/latest/_input_impl/video_types.py`` does: the raw file plus
    ``start_time``/``duration``/``crop`` (private), ``get_active_trim_window()``, ``get_dimensions()`` of the
    crop, ``as_trimmed``/``as_cropped``, and ``get_stream_source()`` still the whole file."""
    from comfy_api.input_impl import VideoFromFile

    if "crop" in inspect.signature(VideoFromFile.__init__).parameters:
        return VideoFromFile

    class NewerVideoFromFile(VideoFromFile):
        def __init__(self, file, *, start_time=0.0, duration=0.0, crop=None):
            super().__init__(file)
            self._start, self._duration = start_time, duration
            self._VideoFromFile__crop = crop  # where the newer class keeps it (name-mangled self.__crop)

        def get_active_trim_window(self):
            return float(self._start), float(self._duration)

        def get_dimensions(self):
            crop = self._VideoFromFile__crop
            return super().get_dimensions() if crop is None else (crop[2], crop[3])

        def as_trimmed(self, start_time=0, duration=0, strict_duration=True):
            return NewerVideoFromFile(self.get_stream_source(), start_time=self._start + start_time,
                                      duration=duration, crop=self._VideoFromFile__crop)

        def as_cropped(self, x=0, y=0, width=0, height=0):
            return NewerVideoFromFile(self.get_stream_source(), start_time=self._start, duration=self._duration,
                                      crop=(x, y, width, height))

    return NewerVideoFromFile


@pytest.fixture(scope="module")
def faces(H):
    from fantasyportrait_pack.fantasyportrait_core.faces.detector import FaceDetector
    from fantasyportrait_pack.fantasyportrait_core.faces.landmarks import LandmarkModel
    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import FaceModels

    return FaceModels(FaceDetector(model_path("face_det.onnx")), LandmarkModel(model_path("face_landmark.onnx")))


def test_a_trimmed_and_cropped_video_is_tracked_on_its_window_and_crop(H, faces):
    """jgz.mp4 (15 fps, 512x512, audio) trimmed to 1.0 s + 1.2 s (Trim Video) and cropped to 400x360 at (40, 90)
    (Crop Video): the tracker uses frames 15.. of the file, cropped, exactly as the same pixels given as IMAGE,
    and the audio from 1.0 s on; a window past the clip's end is named."""
    import numpy as np
    import torch

    from fantasyportrait_pack.fantasyportrait_core.video import read_audio, read_video

    clip = media_path("jgz.mp4")
    video = newer_video_class()(clip).as_trimmed(1.0, 1.2).as_cropped(40, 90, 400, 360)
    assert video.get_dimensions() == (400, 360)
    tracks, crops, preview, fps, audio = H.fp.FantasyPortraitFaceTracker(faces, 96, 0, video=video, start_frame=2,
                                                                         length=9)
    whole = read_video(clip).frames
    pixels = whole[15 + 2:15 + 2 + 9, 90:90 + 360, 40:40 + 400]  # the window's frames 2..10, cropped
    as_images = H.fp.FantasyPortraitFaceTracker(faces, 96, 0, images=torch.from_numpy(pixels).float() / 255)
    assert tracks.tracks.num_frames == 9 and tracks.tracks.frame_size == (360, 400)
    assert np.array_equal(tracks.tracks.landmarks, as_images[0].tracks.landmarks)
    assert np.array_equal(tracks.crops, as_images[0].crops)
    assert torch.equal(preview, as_images[2]) and preview.shape == (9, 360, 400, 3)
    assert fps == 15.0
    full = read_audio(clip, 0.0)
    first = round(17 / 15 * full["sample_rate"])  # the first used frame's time: 1.0 s + 2 frames
    assert audio["sample_rate"] == full["sample_rate"]
    assert audio["waveform"].shape[-1] == round(9 / 15 * full["sample_rate"])
    assert torch.equal(audio["waveform"], full["waveform"][..., first:first + audio["waveform"].shape[-1]])
    with pytest.raises(Exception, match="has no frame in its trim window"):
        H.fp.FantasyPortraitFaceTracker(faces, 96, 0, video=newer_video_class()(clip).as_trimmed(9.0, 1.0))


def test_an_unknown_video_edit_falls_back_to_the_hosts_decode(H, faces):
    """A VIDEO whose reported size differs from what its file streams as (an edit the pack does not know) is
    decoded by the host (get_components) rather than tracked on the wrong pixels."""
    from comfy_api.input_impl import VideoFromFile

    clip = media_path("jgz.mp4")
    calls = []

    class OddEdit(VideoFromFile):
        def get_dimensions(self):
            return (256, 256)

        def get_components(self):
            calls.append(1)
            parts = super().get_components()
            return types.SimpleNamespace(images=parts.images[:, :256, :256], frame_rate=parts.frame_rate,
                                         audio=parts.audio)

    tracks = H.fp.FantasyPortraitFaceTracker(faces, 64, 0, video=OddEdit(clip), length=5)[0]
    assert calls == [1] and tracks.tracks.frame_size == (256, 256) and tracks.tracks.num_frames == 5
