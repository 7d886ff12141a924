"""The pack's small models (PD-FGC encoder, token encoder, the adapter's K/V projections) under ComfyUI's model
management: one ModelPatcher per model and load device, so ComfyUI loads, offloads, counts and frees them like
its own models. Imported only inside ComfyUI.

The patcher class is the host's ``CoreModelPatcher`` where it has one (newer releases, Comfy-Org/ComfyUI
e59d85a0 ``comfy/model_patcher.py``: ``CoreModelPatcher = ModelPatcher``, rebound to ``ModelPatcherDynamic``
when dynamic VRAM is on): ``load_models_gpu`` turns the dynamic path off for a whole call as soon as one of its
models is a plain ModelPatcher (a7631e35 ``comfy/model_management.py``), and the K/V projections are loaded in
the same call as the Wan model. Older releases have only ModelPatcher.

The patchers are kept beside their owner (the loaded FaceModels / adapter object) and dropped with it, so none
outlives the node output that holds its weights, and nothing is hung on the owner itself.
"""

from __future__ import annotations

import weakref

import comfy.model_management
import comfy.model_patcher

_held: dict = {}  # id(owner) -> {name: (module, {device: patcher})}, dropped when the owner is collected


def _entries(owner) -> dict:
    key = id(owner)
    if key not in _held:  # the owners are dataclasses (unhashable), so keyed by id and cleared by a finalizer
        weakref.finalize(owner, _held.pop, key, None)  # first: an owner that takes no weak reference raises here
        _held[key] = {}
    return _held[key]


def managed_module(owner, name: str, make, load_device) -> comfy.model_patcher.ModelPatcher:
    """The ModelPatcher of ``owner``'s model ``name`` for ``load_device``. The module is ``make()``'s result,
    made once per owner and name; the patcher is made once per device and then reused, so ComfyUI knows when it
    is loaded already (one module under two load devices is moved by whichever patcher loads it last)."""
    per_owner = _entries(owner)
    if name not in per_owner:
        per_owner[name] = (make(), {})
    module, patchers = per_owner[name]
    key = str(load_device)
    if key not in patchers:
        patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
        patchers[key] = patcher(module, load_device=load_device,
                                offload_device=comfy.model_management.unet_offload_device())
    return patchers[key]


def load_managed(patcher: comfy.model_patcher.ModelPatcher):
    """Load a managed model to its device through ComfyUI; returns the module and the device."""
    comfy.model_management.load_models_gpu([patcher])
    return patcher.model, patcher.load_device
