"""Test-only ComfyUI nodes (never shipped): stand-ins for models that cannot be made small."""

import torch


class FPTestTextConditioning:
    """Random text conditioning in umT5-XXL's shape, instead of CLIPLoader + CLIPTextEncode."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, 12, 4096, generator=g), {}]],)


NODE_CLASS_MAPPINGS = {"FPTestTextConditioning": FPTestTextConditioning}
