"""Loading both released adapter layouts, dims from shapes, strict keys and clear errors."""

import os
import pickle

import pytest
import torch

from checkpoint_factory import RELEASED, adapter_state_dict, flatten, save_ckpt, save_single_file
from fantasyportrait_core import CheckpointError, adapter_from_state_dict, load_adapter


def test_ckpt_and_single_file_load_to_the_same_model(tmp_path, tiny_adapter_state):
    ckpt = save_ckpt(tmp_path / "fantasyportrait_model.ckpt", tiny_adapter_state)
    st = save_single_file(tmp_path / "fp.safetensors", tiny_adapter_state, dtype=torch.float32)
    a, b = load_adapter(ckpt), load_adapter(st)
    feats = torch.randn(1, 5, 554)
    with torch.no_grad():
        torch.testing.assert_close(a.encoder(feats), b.encoder(feats), rtol=0, atol=0)
    assert len(a.blocks) == len(b.blocks) == 2
    for i in range(2):
        torch.testing.assert_close(a.blocks[i][0], tiny_adapter_state["ip_adapter"][
            f"blocks.{i}.cross_attn.ip_adapter_single_stream_k_proj.weight"])
        torch.testing.assert_close(b.blocks[i][1], tiny_adapter_state["ip_adapter"][
            f"blocks.{i}.cross_attn.ip_adapter_single_stream_v_proj.weight"])
    assert a.source == "fantasyportrait_model.ckpt"
    assert a.motion_encoder_state is None


def test_dims_come_from_the_checkpoint():
    nested = adapter_state_dict(token_dim=48, res_dim=128, depth=3, heads=2, mouth_queries=8,
                                emo_queries=2, blocks=5, model_dim=256)
    adapter = adapter_from_state_dict(flatten(nested))
    enc = adapter.encoder
    assert (enc.token_dim, enc.tokens_per_frame) == (48, 4 + 8 + 2)
    assert len(enc.mouth_proj_model.layers) == 3
    assert enc.mouth_proj_model.layers[0][0].heads == 2
    assert (len(adapter.blocks), adapter.blocks.model_dim, adapter.blocks.token_dim) == (5, 256, 48)
    with torch.no_grad():
        assert enc(torch.randn(1, 2, 554)).shape == (1, 2 * 14, 48)


def test_full_released_shapes_resolve_every_key_on_meta():
    nested = adapter_state_dict(device="meta", **RELEASED)
    adapter = adapter_from_state_dict(flatten(nested), dtype="bf16")
    enc = adapter.encoder
    assert enc.token_dim == 2048 and enc.tokens_per_frame == 24 and enc.feature_dim == 554
    for resampler, queries in ((enc.mouth_proj_model, 16), (enc.emo_proj_model, 4)):
        assert resampler.num_queries == queries and len(resampler.layers) == 4
        assert resampler.layers[0][0].heads == 20
        assert resampler.latents.shape == (1, queries, 1280)
    assert len(adapter.blocks) == 40 and adapter.blocks.model_dim == 5120
    assert all(p.dtype == torch.float32 for p in enc.parameters())  # the token encoder is always fp32
    assert adapter.blocks[39][1].dtype == torch.bfloat16
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == sum(t.numel() for part in ("proj_model", "mouth_proj_model", "emo_proj_model")
                           for t in nested[part].values())


def test_single_file_with_motion_encoder_and_dtypes(tmp_path, tiny_adapter_state):
    motion = {"conv1.weight": torch.randn(64, 3, 7, 7), "fc.bias": torch.randn(512)}
    path = save_single_file(tmp_path / "Wan2_1_FantasyPortrait_fp16.safetensors", tiny_adapter_state, motion)
    adapter = load_adapter(path, dtype="fp16")
    assert sorted(adapter.motion_encoder_state) == ["conv1.weight", "fc.bias"]
    assert adapter.blocks[0][0].dtype == torch.float16  # the dtype governs the K/V projections
    full = load_adapter(path, dtype="fp32")
    assert full.blocks[0][0].dtype == torch.float32
    # the token encoder runs in fp32 whatever the dtype (released): identical tokens, not 0.5% off
    features = torch.randn(1, 5, 554)
    assert next(adapter.encoder.parameters()).dtype == torch.float32
    assert torch.equal(adapter.encoder(features), full.encoder(features))


def test_missing_and_unexpected_keys_are_listed_with_the_file(tiny_adapter_state):
    flat = flatten(tiny_adapter_state)
    del flat["mouth_proj_model.layers.1.0.to_kv.weight"]
    flat["emo_proj_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        adapter_from_state_dict(flat, name="my_adapter.safetensors")
    msg = str(err.value)
    assert "my_adapter.safetensors" in msg
    assert "Missing keys: mouth_proj_model.layers.1.0.to_kv.weight" in msg
    flat = flatten(tiny_adapter_state)
    flat["emo_proj_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="Unexpected keys: emo_proj_model.extra.weight"):
        adapter_from_state_dict(flat, name="x")


def test_missing_block_weight_is_listed(tiny_adapter_state):
    flat = flatten(tiny_adapter_state)
    del flat["ip_adapter.blocks.1.cross_attn.ip_adapter_single_stream_v_proj.weight"]
    with pytest.raises(CheckpointError, match="blocks.1.cross_attn.ip_adapter_single_stream_v_proj"):
        adapter_from_state_dict(flat)


def test_inconsistent_shapes_are_reported(tiny_adapter_state):
    flat = flatten(tiny_adapter_state)
    flat["emo_proj_model.layers.0.0.to_out.weight"] = torch.zeros(64, 32)
    with pytest.raises(CheckpointError, match="tensors of the wrong shape"):
        adapter_from_state_dict(flat)


def test_checkpoints_of_other_models_are_named(tmp_path):
    wan = {"blocks.0.self_attn.q.weight": torch.zeros(2, 2), "head.head.weight": torch.zeros(2, 2)}
    torch.save(wan, tmp_path / "wan.pth")
    with pytest.raises(CheckpointError, match="not a FantasyPortrait adapter.*Wan diffusion model"):
        load_adapter(tmp_path / "wan.pth")
    pdfgc = {"to_mouth.0.weight": torch.zeros(2, 2), "m0.b1_4.conv1.weight": torch.zeros(1)}
    torch.save(pdfgc, tmp_path / "pd_fpg.pth")
    with pytest.raises(CheckpointError, match="PD-FGC motion encoder"):
        load_adapter(tmp_path / "pd_fpg.pth")


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_truncated_files_are_reported(tmp_path, tiny_adapter_state, fmt):
    path = tmp_path / f"fantasyportrait_model.{fmt}"
    if fmt == "ckpt":
        save_ckpt(path, tiny_adapter_state)
    else:
        save_single_file(path, tiny_adapter_state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_adapter(path)


def test_empty_absent_and_garbage_files(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello world")
    with pytest.raises(CheckpointError, match=r"notes.ckpt is not a model file \(11 bytes; it starts with b'hello"):
        load_adapter(tmp_path / "notes.ckpt")
    (tmp_path / "odd.ckpt").write_bytes(b"\x80\x02garbage")  # starts like a pickle, is not one
    with pytest.raises(CheckpointError, match="could not be read as a torch checkpoint"):
        load_adapter(tmp_path / "odd.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_adapter(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_adapter(tmp_path / "nope.ckpt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_needs_code_execution_is_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.ckpt"
    torch.save({"proj_model": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="needs to execute code.*GLOBAL posix.mkdir"):
        load_adapter(path)
    assert not os.path.exists(marker)
    # the same with a legacy (non-zip) pickle
    with open(tmp_path / "evil_legacy.pth", "wb") as fh:
        pickle.dump({"x": _Exploit(marker)}, fh)
    with pytest.raises(CheckpointError, match="needs to execute code"):
        load_adapter(tmp_path / "evil_legacy.pth")
    assert not os.path.exists(marker)


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2144f1fd6b3d\nsize 1234567890\n")
HTML_PAGE = b"\n<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>"


@pytest.mark.parametrize("name", ["fantasyportrait_model.ckpt", "pd_fpg.pth", "Wan2_1_FantasyPortrait_fp16.safetensors"])
@pytest.mark.parametrize("content, said", [
    (LFS_POINTER, "is a Git LFS pointer"),
    (HTML_PAGE, "is a web page or an error message"),
    (bytes(range(256)) * 8, "not a"),
])
def test_downloads_that_are_not_model_files_are_named(tmp_path, name, content, said):
    from fantasyportrait_core.motion.encoder import load_motion_encoder

    path = tmp_path / name
    path.write_bytes(content)
    for load in (load_adapter, load_motion_encoder):
        with pytest.raises(CheckpointError) as info:
            load(str(path))
        message = str(info.value)
        assert message.startswith(name) and said in message and "Download it again" in message
        assert "execute code" not in message and "safetensors version" not in message
