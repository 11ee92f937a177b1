"""The 19 corruptions of docs/protocol.md §6, written for batches: one call corrupts a whole batch.

Every function takes x (float32 [B, H, W, 3] in [0,1], H, W ≥ 32), the severity's constants,
a numpy Generator and the table name, and returns the corrupted batch in [0,1]. Procedures
follow `imagecorruptions` (the reference); where the reference works image by image the batch
dimension is vectorised, and where a reference step is inherently sequential (glass blur's
pixel swaps, the plasma fractal's diamond-square passes) the sequence is kept and only the
images are processed together, so results agree in distribution, not draw for draw.
"""

from __future__ import annotations

import io
import math
from functools import cache

import cv2
import numpy as np
from scipy import ndimage

Batch = np.ndarray


def _gaussian(x: Batch, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> Batch:
    """skimage.filters.gaussian over the two spatial axes of a batch ([B, H, W] or [B, H, W, C])."""
    sigmas = (0, sigma, sigma) + ((0,) if x.ndim == 4 else ())
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def gaussian_noise(x, c, rng, table):
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, c, rng, table):
    return np.clip(rng.poisson(x * c) / float(c), 0, 1)


def impulse_noise(x, c, rng, table):
    """Salt and pepper on each value with probability `amount`, half salt (skimage's rule)."""
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def speckle_noise(x, c, rng, table):
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)


def gaussian_blur(x, c, rng, table):
    return np.clip(_gaussian(x, c), 0, 1)


def glass_blur(x, c, rng, table):
    """Blur, quantise to uint8, move pixels locally (the reference's sequential scan, all
    images at once, each with its own offsets), blur again.

    The reference's "swap" `x[h, w], x[h', w'] = x[h', w'], x[h, w]` assigns numpy views, so it
    copies x[h', w'] into x[h, w] and leaves x[h', w'] as it was; the published CIFAR-10-C and
    ImageNet-C images were made that way, and so is this."""
    sigma, delta, iterations = c
    q = np.uint8(_gaussian(x, sigma) * 255)
    b, h, w = q.shape[:3]
    batch = np.arange(b)
    positions = [(r, c) for r in range(h - delta, delta, -1) for c in range(w - delta, delta, -1)]
    # all offsets drawn at once (high exclusive, as the reference); the scan stays sequential
    offsets = rng.integers(-delta, delta, size=(iterations, len(positions), 2, b))
    for step in offsets:
        for (row, col), (dx, dy) in zip(positions, step, strict=True):
            q[batch, row, col] = q[batch, row + dy, col + dx]
    return np.clip(_gaussian(q / 255.0, sigma), 0, 1)


@cache
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    if radius <= 8:
        span, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        span, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(span, span)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(x, c, rng, table):
    """Convolution with an anti-aliased disk (OpenCV filter2D's reflect-101 border)."""
    kernel = _disk(*c)
    out = np.stack([cv2.filter2D(image.astype(np.float64), -1, kernel) for image in x])
    return np.clip(out, 0, 1)


def motion_blur_batch(x: Batch, radius: int, sigma: float, angles: np.ndarray) -> Batch:
    """The reference's motion blur: a Gaussian-weighted sum of edge-clamped shifts along each
    image's angle, stopping at the first shift beyond the border. The shifts are collected into
    one line kernel per image and applied by OpenCV's filter2D with a replicated border (the
    same sum; equal to the shift loop to float rounding). x: [B, H, W(, C)], float32."""
    b, h, w = x.shape[:3]
    width = radius * 2 + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    radians = np.radians(angles)
    sin, cos = width * np.sin(radians), width * np.cos(radians)
    step = np.arange(width)[None, :]
    hypot = np.hypot(sin, cos)[:, None]
    dy = -np.ceil(step * sin[:, None] / hypot - 0.5).astype(int)  # [B, width]
    dx = -np.ceil(step * cos[:, None] / hypot - 0.5).astype(int)
    active = np.cumprod((np.abs(dy) < h) & (np.abs(dx) < w), axis=1).astype(bool)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(b):
        kernel = np.zeros((2 * width + 1, 2 * width + 1), np.float32)  # anchor at the centre
        on = active[i]
        np.add.at(kernel, (width - dy[i, on], width - dx[i, on]), weights[on])
        image = np.ascontiguousarray(x[i], dtype=np.float32)
        out[i] = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE).reshape(
            x.shape[1:]
        )
    return out


def motion_blur(x, c, rng, table):
    """Motion blur along a random angle in [-45°, 45°] per image."""
    return np.clip(motion_blur_batch(x, c[0], c[1], rng.uniform(-45, 45, len(x))), 0, 1)


@cache
def _linear_zoom_matrix(size: int, factor: float) -> np.ndarray:
    """scipy.ndimage.zoom(order=1)'s 1-D resampling of `size` samples to round(size·factor),
    as a matrix (output i reads input i·(size-1)/(out-1), linearly interpolated)."""
    out = round(size * factor)
    matrix = np.zeros((out, size), dtype=np.float64)
    positions = np.arange(out) * ((size - 1) / (out - 1) if out > 1 else 0.0)
    low = np.minimum(np.floor(positions).astype(int), size - 1)
    frac = positions - low
    matrix[np.arange(out), low] += 1 - frac
    high = np.minimum(low + 1, size - 1)
    matrix[np.arange(out), high] += frac
    return matrix


def _clipped_zoom(x: Batch, factor: float) -> Batch:
    """Centre crop of side ceil(side / factor), zoomed back by `factor` (bilinear), batched:
    two matrix products over the whole batch (rows, then columns)."""
    b, h, w = x.shape[:3]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[:, top : top + ch, left : left + cw].astype(np.float32)
    rows = _linear_zoom_matrix(ch, factor)[:h].astype(np.float32)
    cols = _linear_zoom_matrix(cw, factor)[:w].astype(np.float32)
    c = x.shape[3] if x.ndim == 4 else 1
    flat = crop.reshape(b, ch, cw, c).transpose(1, 0, 3, 2).reshape(ch, b * c * cw)
    zoomed = (rows @ flat).reshape(h * b * c, cw) @ cols.T  # [h, B, C, w]
    return zoomed.reshape(h, b, c, w).transpose(1, 0, 3, 2).reshape(x.shape).astype(x.dtype)


def zoom_blur(x, c, rng, table):
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1)


def _grey(x: Batch) -> Batch:
    """OpenCV's RGB→grey weights."""
    return x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype)


def snow(x, c, rng, table):
    mean, std, zoom, threshold, radius, sigma, blend = c
    b, h, w = x.shape[:3]
    layer = rng.normal(size=(b, h, w), loc=mean, scale=std)
    layer = _clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0
    layer = np.clip(layer, 0, 1)
    layer = motion_blur_batch(layer, radius, sigma, rng.uniform(-135, -45, b))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, _grey(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1)


@cache
def _frost_photographs(table: str) -> tuple[np.ndarray, ...]:
    from atom_tf.corruptions.reference import frost_photograph_paths

    photos = [cv2.imread(p) for p in frost_photograph_paths()[:5]]  # the reference draws from 5
    if table == "cifar":
        photos = [cv2.resize(p, (0, 0), fx=0.2, fy=0.2) for p in photos]
    return tuple(p[..., ::-1].astype(np.float32) / 255.0 for p in photos)  # BGR → RGB


def frost(x, c, rng, table):
    """a·x + b·(random crop of a frost photograph); ImageNet-C rescales the photographs by 1.1
    (for images smaller than them), CIFAR-10-C by 0.2."""
    b, h, w = x.shape[:3]
    photos = _frost_photographs(table)
    out = np.empty_like(x)
    for i, index in enumerate(rng.integers(0, len(photos), b)):
        photo = photos[index]
        if table == "imagenet":
            scale = 1.1 * max(1.0, h / photo.shape[0], w / photo.shape[1])
            photo = _rescaled_frost(index, scale)
        top = rng.integers(0, photo.shape[0] - h)
        left = rng.integers(0, photo.shape[1] - w)
        out[i] = c[0] * x[i] + c[1] * photo[top : top + h, left : left + w]
    return np.clip(out, 0, 1)


@cache
def _rescaled_frost(index: int, scale: float) -> np.ndarray:
    from atom_tf.corruptions.reference import frost_photograph_paths

    photo = cv2.imread(frost_photograph_paths()[index])
    size = (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale))
    return (
        cv2.resize(photo, dsize=size, interpolation=cv2.INTER_CUBIC)[..., ::-1].astype(np.float32)
        / 255.0
    )


def plasma_fractal(
    batch: int, mapsize: int, wibbledecay: float, rng: np.random.Generator
) -> np.ndarray:
    """Diamond-square height maps in [0, 1], one per image: the reference's passes (which depend
    on each other, coarse to fine) run once, each on all maps together."""
    maps = np.zeros((batch, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(values):
        return values / 4 + wibble * rng.uniform(-wibble, wibble, values.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, -1, axis=1)
        square += np.roll(square, -1, axis=2)
        maps[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        centres = maps[:, half:mapsize:step, half:mapsize:step]
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(top)
        step //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(x, c, rng, table):
    b, h, w = x.shape[:3]
    mapsize = 1 << (max(h, w) - 1).bit_length()
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * plasma_fractal(b, mapsize, c[1], rng)[:, :h, :w, None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1)


# HSV corruptions in closed form. In skimage's HSV model every channel is V·(1 − S·w_c), with
# w_c ∈ [0, 1] a function of the hue only (0 for the largest channel, 1 for the smallest). So
# changing V to V' scales the pixel by V'/V, and changing S to S' (hue and V kept) gives
# V − (V − x_c)·S'/S. Grey pixels (S = 0, where skimage sets H = 0: red) become
# (V, V(1 − S'), V(1 − S')), and black ones (V = 0) (V', V', V'). This is the reference's
# rgb2hsv → change → hsv2rgb round trip without the conversions (same values up to rounding).


def brightness(x, c, rng, table):
    """V ← clip(V + c, 0, 1)."""
    v = x.max(axis=-1, keepdims=True)
    new_v = np.clip(v + np.float32(c), 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(v > 0, x * (new_v / v), new_v)
    return np.clip(out, 0, 1)


def saturate(x, c, rng, table):
    """S ← clip(S·a + b, 0, 1)."""
    v = x.max(axis=-1, keepdims=True)
    spread = v - x.min(axis=-1, keepdims=True)  # V·S
    new_s = np.clip(np.divide(spread, v, out=np.zeros_like(v), where=v > 0) * c[0] + c[1], 0, 1)
    grey = spread <= 0
    # V·S'/(V·S) for coloured pixels; for grey ones the red channel keeps V, the others V(1 − S')
    ratio = np.divide(new_s * v, spread, out=np.zeros_like(v), where=~grey)
    coloured = v - (v - x) * ratio
    grey_out = v * np.concatenate([np.ones_like(new_s), 1 - new_s, 1 - new_s], axis=-1)
    return np.clip(np.where(grey, grey_out, coloured), 0, 1)


def contrast(x, c, rng, table):
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def elastic_transform(x, c, rng, table):
    """ImageNet-C: a smooth random displacement field (σ = 1% of the size, α·U(±0.5%) noise,
    truncate 3); CIFAR-10-C: first a random affine map of three jittered points (reflect-101
    border), then a Gaussian-smoothed U(-1,1) field × α. Bilinear resampling, reflect mode."""
    b, h, w = x.shape[:3]
    if table == "cifar":
        alpha, sigma, affine = (v * min(h, w) for v in c)
        centre = np.float32([h, w]) // 2
        size = min(h, w) // 3
        pts1 = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
        warped = np.empty_like(x)
        for i in range(b):
            pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
            matrix = cv2.getAffineTransform(pts1, pts2)
            warped[i] = cv2.warpAffine(x[i], matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        x = warped
        noise = rng.uniform(-1, 1, (2, b, h, w))
        sig = (0, 0, sigma, sigma)
    else:
        alpha = c
        max_d = h * 0.005
        noise = rng.uniform(-max_d, max_d, (2, b, h, w))
        sig = (0, 0, h * 0.01, w * 0.01)
    dx, dy = ndimage.gaussian_filter(noise, sig, mode="reflect", truncate=3) * alpha
    rows = np.arange(h, dtype=np.float64)[None, :, None] + dy
    cols = np.arange(w, dtype=np.float64)[None, None, :] + dx
    return np.clip(bilinear_sample(x, rows, cols), 0, 1)


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric extension (… c b a | a b c … | c b a …), scipy's "reflect"."""
    i = np.mod(i, 2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def bilinear_sample(x: Batch, rows: np.ndarray, cols: np.ndarray) -> Batch:
    """x[b, rows[b, i, j], cols[b, i, j], :] with bilinear interpolation and reflected borders:
    `scipy.ndimage.map_coordinates(order=1, mode="reflect")` for a whole batch at once, as
    gathers instead of a 4-D coordinate grid."""
    b, h, w = x.shape[:3]
    r0, c0 = np.floor(rows), np.floor(cols)
    tr, tc = (rows - r0).astype(x.dtype)[..., None], (cols - c0).astype(x.dtype)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    r0, r1 = _reflect_index(r0, h), _reflect_index(r0 + 1, h)
    c0, c1 = _reflect_index(c0, w), _reflect_index(c0 + 1, w)
    flat = x.reshape(b * h * w, -1)
    base = (np.arange(b) * h * w)[:, None, None]

    def at(r, c):
        return flat[base + r * w + c]

    top = at(r0, c0) * (1 - tc) + at(r0, c1) * tc
    bottom = at(r1, c0) * (1 - tc) + at(r1, c1) * tc
    return top * (1 - tr) + bottom * tr


def _pil_each(x: Batch, fn) -> Batch:
    from PIL import Image

    images = np.uint8(np.round(np.clip(x, 0, 1) * 255)) if x.dtype != np.uint8 else x
    return (
        np.stack([np.asarray(fn(Image.fromarray(im)), dtype=np.float32) for im in images]) / 255.0
    )


def pixelate(x, c, rng, table):
    """Box-downsample to int(side·c), then up (nearest for ImageNet-C, box for CIFAR-10-C)."""
    from PIL import Image

    h, w = x.shape[1:3]
    up = Image.BOX if table == "cifar" else Image.NEAREST
    return _pil_each(
        x, lambda im: im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), up)
    )


def jpeg_compression(x, c, rng, table):
    from PIL import Image

    def round_trip(im):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=c)
        return Image.open(buffer)

    return _pil_each(x, round_trip)


def spatter(x, c, rng, table):
    """Water (pale turquoise, shaded by distance to the liquid's edges) or mud (brown, from a
    blurred mask > 0.8) blended in; the edge shading uses OpenCV per image, as the reference."""
    mean, std, sigma, threshold, intensity, mud = c
    b, h, w = x.shape[:3]
    liquid = _gaussian(rng.normal(size=(b, h, w), loc=mean, scale=std), sigma)
    liquid[liquid < threshold] = 0
    if mud == 0:
        out = np.empty_like(x)
        water = np.array([175, 238, 238], np.float32) / 255.0  # pale turquoise
        for i in range(b):
            layer = (liquid[i] * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(layer, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = layer.astype(np.float32) * dist
            m = m / m.max() if m.max() > 0 else m  # the reference divides by the max (nan if 0)
            out[i] = x[i] + (m * intensity)[..., None] * water
        return np.clip(out, 0, 1)
    m = _gaussian(np.where(liquid > threshold, 1.0, 0.0).astype(np.float32), intensity)
    m[m < 0.8] = 0
    brown = np.array([63, 42, 20], np.float32) / 255.0
    return np.clip(x * (1 - m[..., None]) + m[..., None] * brown, 0, 1)
