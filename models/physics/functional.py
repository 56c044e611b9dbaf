r"""Pure torch kernels of the operator families: forward / adjoint / pseudo-inverse.

Every function takes the measurement or image with a leading batch axis and a
``params`` dict of tensors laid out as ``docs/architecture.md`` says (the
output of ``service.operators.compile.compile_operator`` stacked on a batch
axis). Nothing here knows a shape in advance, so one exported graph serves
every size and every parameter value of a family.

Complex tensors are real tensors with an (re, im) axis of length 2 right after
the batch axis: ``z[:, 0]`` is the real part, ``z[:, 1]`` the imaginary part.

Conventions
-----------
* MRI: :math:`y = M \odot F x`, :math:`F` the orthonormal centred 2-D DFT
  ``fftshift(fft2(ifftshift(x), norm="ortho"))`` (fastMRI / deepinv).
  Images are real, so :math:`A^\top y = \mathrm{Re}(F^H (M \odot y))`.
* Blur: circular convolution, :math:`A x = F^H(\hat k \odot F x)` with the
  unitary DFT and :math:`\hat k` the FFT of the kernel centred at the origin.
* CT: a sparse matrix in padded-ELL form for both :math:`A` and
  :math:`A^\top` (``service/operators/ct_geometry.py``); line integrals in
  pixel units.

Example
-------
>>> import torch
>>> x = torch.ones(1, 4, 4)
>>> mask = torch.zeros(1, 4, 4); mask[..., ::2] = 1
>>> forward("inpainting", x, {"mask": mask}).sum().item()
8.0
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["CG_ITERATIONS", "KERNEL_FUNCTIONS", "adjoint", "forward", "pinv"]

Params = dict[str, torch.Tensor]
Kernel = Callable[[torch.Tensor, Params], torch.Tensor]

#: Fixed CG iterations where no closed-form pseudo-inverse exists (cs_dense, mri_multicoil).
CG_ITERATIONS = 30
#: Relative singular-value cut-off of the blur pseudo-inverse (truncated SVD).
BLUR_PINV_CUTOFF = 1e-3


# --- complex helpers
def _dft2(re: torch.Tensor, im: torch.Tensor | None, fh: torch.Tensor, fw: torch.Tensor):
    """``F_h Z F_wᵀ`` for ``Z = re + i im`` of shape [B, ..., H, W]; fh [B, 2, H, H]."""
    extra = re.dim() - 3  # axes between batch and (H, W), e.g. coils
    hr, hi = _expand(fh[:, 0], extra), _expand(fh[:, 1], extra)
    wr, wi = _expand(fw[:, 0], extra).transpose(-1, -2), _expand(fw[:, 1], extra).transpose(-1, -2)
    if im is None:
        ar, ai = hr @ re, hi @ re
    else:
        ar, ai = hr @ re - hi @ im, hr @ im + hi @ re
    return ar @ wr - ai @ wi, ar @ wi + ai @ wr


def _idft2(re: torch.Tensor, im: torch.Tensor, fh: torch.Tensor, fw: torch.Tensor):
    """``F_hᴴ Z conj(F_w)`` (the inverse of :func:`_dft2` for unitary matrices)."""
    extra = re.dim() - 3
    hr, hi = _expand(fh[:, 0], extra).transpose(-1, -2), _expand(fh[:, 1], extra).transpose(-1, -2)
    wr, wi = _expand(fw[:, 0], extra), _expand(fw[:, 1], extra)
    ar, ai = hr @ re + hi @ im, hr @ im - hi @ re  # (hr - i hi)(re + i im)
    return ar @ wr + ai @ wi, ai @ wr - ar @ wi  # (ar + i ai)(wr - i wi)


def _expand(m: torch.Tensor, extra: int) -> torch.Tensor:
    for _ in range(extra):
        m = m.unsqueeze(1)
    return m


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product, keeping dims for broadcasting."""
    dims = list(range(1, a.dim()))
    return (a * b).sum(dim=dims, keepdim=True)


def _cg_normal(
    rhs: torch.Tensor, normal: Callable[[torch.Tensor], torch.Tensor], iterations: int
) -> torch.Tensor:
    """Conjugate gradients on ``N z = rhs`` from ``z = 0``, per sample, fixed iterations.

    Started at zero, CG on the normal equations stays in the row space of A,
    so it converges to the minimum-norm least-squares solution (``A† y``).
    """
    z = torch.zeros_like(rhs)
    r = rhs
    d = r
    rr = _bdot(r, r)
    tiny = torch.finfo(rhs.dtype).tiny
    for _ in range(iterations):
        nd = normal(d)
        dnd = _bdot(d, nd)
        alpha = rr / torch.clamp(dnd, min=tiny)
        z = z + alpha * d
        r = r - alpha * nd
        rr_new = _bdot(r, r)
        d = r + (rr_new / torch.clamp(rr, min=tiny)) * d
        rr = rr_new
    return z


# --- denoising
def _identity(t: torch.Tensor, p: Params) -> torch.Tensor:
    return t


# --- inpainting
def _inpainting_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    return p["mask"] * x


def _masked_inverse(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``y / mask`` on the support of the mask, 0 elsewhere (pinv of a diagonal)."""
    safe = torch.where(mask > 0, mask, torch.ones_like(mask))
    return torch.where(mask > 0, y / safe, torch.zeros_like(y))


def _inpainting_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    return _masked_inverse(y, p["mask"])


# --- blur
def _blur_apply(x: torch.Tensor, otf_re: torch.Tensor, otf_im: torch.Tensor, p: Params):
    xr, xi = _dft2(x, None, p["dft_h"], p["dft_w"])
    zr, zi = otf_re * xr - otf_im * xi, otf_re * xi + otf_im * xr
    return _idft2(zr, zi, p["dft_h"], p["dft_w"])[0]


def _blur_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    return _blur_apply(x, p["otf"][:, 0], p["otf"][:, 1], p)


def _blur_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    return _blur_apply(y, p["otf"][:, 0], -p["otf"][:, 1], p)


def _blur_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    re, im = p["otf"][:, 0], p["otf"][:, 1]
    power = re * re + im * im
    peak = power.amax(dim=(-2, -1), keepdim=True)
    keep = power > (BLUR_PINV_CUTOFF**2) * peak
    safe = torch.where(keep, power, torch.ones_like(power))
    inv_re = torch.where(keep, re / safe, torch.zeros_like(re))
    inv_im = torch.where(keep, -im / safe, torch.zeros_like(im))
    return _blur_apply(y, inv_re, inv_im, p)


# --- super-resolution
def _sr_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    return p["down_h"] @ x @ p["down_w"].transpose(-1, -2)


def _sr_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    return p["down_h"].transpose(-1, -2) @ y @ p["down_w"]


def _sr_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    # Box rows are orthogonal with equal norms: A Aᵀ = c I, c = ‖row_h‖² ‖row_w‖².
    c = (p["down_h"][:, :1] ** 2).sum(-1, keepdim=True) * (p["down_w"][:, :1] ** 2).sum(
        -1, keepdim=True
    )
    return _sr_adjoint(y, p) / c


# --- compressed sensing, dense Gaussian (matrix stored as [m, H, W])
def _csd_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    return (p["matrix"].flatten(2) @ x.flatten(1).unsqueeze(-1)).squeeze(-1)


def _csd_adjoint_flat(y: torch.Tensor, p: Params) -> torch.Tensor:
    return (p["matrix"].flatten(2).transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)


def _csd_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    m = p["matrix"]
    return _csd_adjoint_flat(y, p).reshape(m.shape[0], m.shape[2], m.shape[3])


def _csd_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    # x = Aᵀ (A Aᵀ)⁻¹ y, the m x m system solved by CG.
    flat = p["matrix"].flatten(2)
    z = _cg_normal(
        y, lambda v: (flat @ (flat.transpose(-1, -2) @ v.unsqueeze(-1))).squeeze(-1), CG_ITERATIONS
    )
    return _csd_adjoint(z, p)


# --- compressed sensing, structured (random signs, 2-D DCT, subsampling)
def _css_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    coeff = p["dct_h"] @ (p["signs"] * x) @ p["dct_w"].transpose(-1, -2)
    return torch.gather(coeff.flatten(1), 1, p["keep_index"])


def _css_adjoint_like(y: torch.Tensor, p: Params) -> torch.Tensor:
    padded = torch.cat([y, torch.zeros_like(y[:, :1])], dim=1)
    coeff = torch.gather(padded, 1, p["keep_inverse"]).reshape(p["signs"].shape)
    return p["signs"] * (p["dct_h"].transpose(-1, -2) @ coeff @ p["dct_w"])


# --- MRI
def _mri_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    re, im = _dft2(x, None, p["dft_h"], p["dft_w"])
    return torch.stack([p["mask"] * re, p["mask"] * im], dim=1)


def _mri_backward(yr: torch.Tensor, yi: torch.Tensor, p: Params) -> torch.Tensor:
    return _idft2(yr, yi, p["dft_h"], p["dft_w"])[0]


def _mri_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    return _mri_backward(p["mask"] * y[:, 0], p["mask"] * y[:, 1], p)


def _mri_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    # Zero-filled inverse: exact pseudo-inverse over complex images; real part kept.
    return _mri_backward(
        _masked_inverse(y[:, 0], p["mask"]), _masked_inverse(y[:, 1], p["mask"]), p
    )


# --- multi-coil MRI
def _mc_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    sr, si = p["coils"][:, 0], p["coils"][:, 1]  # [B, C, H, W]
    xr, xi = _dft2(sr * x.unsqueeze(1), si * x.unsqueeze(1), p["dft_h"], p["dft_w"])
    mask = p["mask"].unsqueeze(1)
    return torch.stack([mask * xr, mask * xi], dim=1)


def _mc_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    mask = p["mask"].unsqueeze(1)
    zr, zi = _idft2(mask * y[:, 0], mask * y[:, 1], p["dft_h"], p["dft_w"])
    sr, si = p["coils"][:, 0], p["coils"][:, 1]
    return (sr * zr + si * zi).sum(1)  # Re(conj(S) z) summed over coils


def _mc_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    rhs = _mc_adjoint(y, p)
    return _cg_normal(rhs, lambda v: _mc_adjoint(_mc_forward(v, p), p), CG_ITERATIONS)


# --- CT
def _ell_apply(v: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Padded-ELL sparse product: ``out[.., r] = Σ_k weight[.., r, k] v.flat[index[.., r, k]]``."""
    batch = v.shape[0]
    gathered = torch.gather(v.reshape(batch, -1), 1, index.reshape(batch, -1))
    return (gathered.reshape(index.shape) * weight).sum(-1)


class _Transposed(torch.autograd.Function):
    """``A v`` whose gradient applies the stored exact ``Aᵀ`` (another gather or sparse
    product), instead of autograd's scatter-add into ``v`` (colliding writes). CT forward
    + adjoint + backward, batch 16, 2 CPU cores: 412 ms with autograd's, 328 ms with this."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        v: torch.Tensor,
        apply: Callable[[torch.Tensor], torch.Tensor],
        apply_t: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        ctx.apply_t = apply_t  # type: ignore[attr-defined]
        return apply(v)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        return ctx.apply_t(grad), None, None  # type: ignore[attr-defined]


def _csr_apply(v: torch.Tensor, matrix: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """``matrix @ v`` for a batch ``v`` that shares one sparse CSR ``matrix``."""
    batch = v.shape[0]
    return (matrix @ v.reshape(batch, -1).T).T.reshape(batch, *out_shape)


def _ell_pair(v: torch.Tensor, p: Params, a: str, b: str) -> torch.Tensor:
    if f"{a}_csr" in p:
        # Training (Physics.params(sparse=True)): one CSR matrix for the whole batch,
        # 31x faster than the padded-ELL gathers on 2 CPU cores (A then Aᵀ at batch 4:
        # 2.1 against 66 ms, python -m bench.training_step).
        side = math.isqrt(p["adj_csr"].shape[0])  # CT images are square
        shapes = {"fwd": (-1, p["ramp"].shape[-1]), "adj": (side, side)}
        return _Transposed.apply(
            v,
            lambda u: _csr_apply(u, p[f"{a}_csr"], shapes[a]),
            lambda u: _csr_apply(u, p[f"{b}_csr"], shapes[b]),
        )
    index, weight = p[f"{a}_index"], p[f"{a}_weight"]
    if v.requires_grad and not torch.onnx.is_in_onnx_export():  # training only
        index_t, weight_t = p[f"{b}_index"], p[f"{b}_weight"]
        return _Transposed.apply(
            v,
            lambda u: _ell_apply(u, index, weight),
            lambda u: _ell_apply(u, index_t, weight_t),
        )
    return _ell_apply(v, index, weight)


def _ct_forward(x: torch.Tensor, p: Params) -> torch.Tensor:
    return _ell_pair(x, p, "fwd", "adj")


def _ct_adjoint(y: torch.Tensor, p: Params) -> torch.Tensor:
    return _ell_pair(y, p, "adj", "fwd")


def _ct_pinv(y: torch.Tensor, p: Params) -> torch.Tensor:
    filtered = y @ p["ramp"].transpose(-1, -2)
    return p["fbp_scale"].reshape(-1, 1, 1) * _ct_adjoint(filtered, p)


#: kernel -> (forward, adjoint, pinv)
KERNEL_FUNCTIONS: dict[str, tuple[Kernel, Kernel, Kernel]] = {
    "denoising": (_identity, _identity, _identity),
    "inpainting": (_inpainting_forward, _inpainting_forward, _inpainting_pinv),
    "blur": (_blur_forward, _blur_adjoint, _blur_pinv),
    "superresolution": (_sr_forward, _sr_adjoint, _sr_pinv),
    "cs_dense": (_csd_forward, _csd_adjoint, _csd_pinv),
    "cs_structured": (_css_forward, _css_adjoint_like, _css_adjoint_like),
    "mri": (_mri_forward, _mri_adjoint, _mri_pinv),
    "mri_multicoil": (_mc_forward, _mc_adjoint, _mc_pinv),
    "ct": (_ct_forward, _ct_adjoint, _ct_pinv),
}


def forward(kernel: str, x: torch.Tensor, params: Params) -> torch.Tensor:
    """Apply ``A``: image [B, H, W] -> measurements [B, *graph y]."""
    return KERNEL_FUNCTIONS[kernel][0](x, params)


def adjoint(kernel: str, y: torch.Tensor, params: Params) -> torch.Tensor:
    """Apply ``Aᵀ``: measurements -> image [B, H, W]."""
    return KERNEL_FUNCTIONS[kernel][1](y, params)


def pinv(kernel: str, y: torch.Tensor, params: Params) -> torch.Tensor:
    """Apply the pseudo-inverse ``A†`` (closed form, FBP for CT, CG where none exists)."""
    return KERNEL_FUNCTIONS[kernel][2](y, params)
