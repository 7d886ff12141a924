"""Self-reenactment against a ground truth (the paper's protocol: the first frame of a real clip is the portrait, the
clip drives it, and the clip itself is what the output should be): landmark distance, PSNR and SSIM."""

from __future__ import annotations

import numpy as np

from .motion import face_size

PSNR_CAP = 100.0  # dB, for identical frames (their PSNR is infinite, which JSON cannot hold)


def lmd(out_landmarks: np.ndarray, ref_landmarks: np.ndarray) -> float:
    """The paper's landmark mean distance, normalised: the mean distance of the 222 landmarks between output and
    reference, over the reference face's size (the square root of its landmark box area), averaged over frames."""
    n = min(len(out_landmarks), len(ref_landmarks))
    dist = np.linalg.norm(out_landmarks[:n] - ref_landmarks[:n], axis=-1).mean(-1)
    return float((dist / face_size(ref_landmarks[:n])).mean())


def _gaussian_blur(x: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB uint8 frame, float64 0..255."""
    f = frame.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two RGB uint8 frames, on
    their luma."""
    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gaussian_blur(x), _gaussian_blur(y)
    sxx = _gaussian_blur(x * x) - mx * mx
    syy = _gaussian_blur(y * y) - my * my
    sxy = _gaussian_blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 frames (capped at 100 dB for identical frames)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_CAP if mse <= 0 else float(min(PSNR_CAP, 10 * np.log10(255.0 ** 2 / mse)))


def frame_scores(outputs, references) -> tuple[dict[str, float], int, bool]:
    """Mean PSNR and SSIM over the frames both clips have, read one pair at a time (a reference of another size is
    resized to the output's, which is said in the third value)."""
    import cv2

    psnrs, ssims, resized = [], [], False
    for a, b in zip(outputs, references):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
            resized = True
        psnrs.append(psnr(a, b))
        ssims.append(ssim(a, b))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}, len(psnrs), resized
