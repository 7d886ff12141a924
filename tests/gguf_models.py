"""Tiny Wan 2.1 I2V models in GGUF, as city96's ComfyUI-GGUF loads them (for tests/host_gguf.py).

Written with the ``gguf`` package's writer the way ComfyUI-GGUF's ``tools/convert.py`` lays a Wan file out:
architecture ``wan``, the native key names, 1-D / small tensors, ``modulation`` and the 5-D patch embedding in F32,
the rest quantised. The ``gguf`` package quantises Q8_0 (and the other legacy types) itself; it cannot make K-quants
(llama.cpp's quantizer does), so Q6_K blocks are made here, laid out exactly as ``gguf.quants`` and ComfyUI-GGUF's
``dequant.py`` read them (checked by a round trip through ``gguf.quants.dequantize``).
"""

import glob
import os
import sys
import tarfile

import numpy as np

QK_K = 256  # values per K-quant super-block


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """``[..., n]`` float values (n a multiple of 256) -> Q6_K blocks ``[..., n // 256 * 210]`` (uint8): per block
    128 bytes of low nibbles, 64 bytes of high bit pairs, 16 int8 sub-block scales and an fp16 super-scale."""
    shape = values.shape
    x = values.astype(np.float32).reshape(-1, QK_K)
    sub = x.reshape(-1, 16, 16)
    scale = np.abs(sub).max(axis=2) / 31.0  # [blocks, 16]: q in -32..31
    d = (np.abs(scale).max(axis=1) / 127.0).astype(np.float16)  # the super-block scale, as stored
    d32 = d.astype(np.float32)[:, None]
    scales = np.where(d32 > 0, np.round(scale / np.where(d32 > 0, d32, 1)), 0).clip(-128, 127).astype(np.int8)
    step = (d32 * scales.astype(np.float32))[:, :, None]  # [blocks, 16, 1]
    q = np.where(step != 0, np.round(sub / np.where(step != 0, step, 1)), 0).clip(-32, 31).astype(np.int16) + 32
    q = q.reshape(-1, 2, 128).astype(np.uint8)  # two halves of 128 values
    low, high = q & 0x0F, q >> 4
    ql = low[:, :, :64] | (low[:, :, 64:] << 4)  # [blocks, 2, 64]
    qh = high.reshape(-1, 2, 4, 32)
    qh = qh[:, :, 0] | (qh[:, :, 1] << 2) | (qh[:, :, 2] << 4) | (qh[:, :, 3] << 6)  # [blocks, 2, 32]
    blocks = np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), scales.view(np.uint8),
                             d.reshape(-1, 1).view(np.uint8)], axis=1)
    return blocks.reshape(*shape[:-1], shape[-1] // QK_K * 210)


def _keeps_float(name: str, array: np.ndarray) -> bool:
    """Tensors ComfyUI-GGUF's converter leaves unquantised for Wan."""
    return array.ndim <= 1 or array.size <= 1024 or ".modulation" in name or array.ndim > 4 or "norm" in name


def write_wan_gguf(path: str, state_dict: dict, qtype: str) -> str:
    """The Wan ``state_dict`` (native keys, no prefix; torch tensors) as a GGUF file with ``qtype`` (``Q8_0`` or
    ``Q6_K``) for the large 2-D weights."""
    import gguf

    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    kind = gguf.GGMLQuantizationType[qtype]
    for name, tensor in state_dict.items():
        array = tensor.float().numpy()
        if _keeps_float(name, array) or array.shape[-1] % QK_K:
            writer.add_tensor(name, array.astype(np.float32), raw_dtype=gguf.GGMLQuantizationType.F32)
        elif qtype == "Q6_K":
            writer.add_tensor(name, quantize_q6_k(array), raw_dtype=kind)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_pack_archive(repo: str) -> str | None:
    """The shared ComfyUI-GGUF archive (city96/ComfyUI-GGUF, Apache-2.0), or None."""
    found = sorted(glob.glob(os.path.join(repo, "..", "shared", "host", "comfyui-gguf-*.tar.gz")))
    return found[-1] if found else None


def import_gguf_pack(archive: str, folder: str):
    """ComfyUI-GGUF unpacked into ``folder`` (as into a ComfyUI's custom_nodes) and imported in this ComfyUI
    process, as ComfyUI imports a custom node pack: its ``nodes`` module."""
    import importlib

    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    pack = os.path.join(folder, "ComfyUI-GGUF")
    os.symlink(pack, os.path.join(folder, "comfyui_gguf"))
    sys.path.insert(0, folder)
    return importlib.import_module("comfyui_gguf.nodes")
