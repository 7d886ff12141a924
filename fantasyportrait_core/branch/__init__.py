"""The Wan branch: the adapter cross-attention as a pure function, and the multi-portrait regions, token labels
and masks. (Its placement into ComfyUI's Wan model is ``nodes/wan_patch.py``.)"""
