"""Numba CPU kernels for the EWA projection (forward and hand-written backward) and tile binning.

The twins of ``projection.project_gaussians`` (differentiable torch) and ``tiles.bin_gaussians``
(vectorised torch), with the same rules (see those modules). ``prange`` runs over Gaussians;
each one's gradient sums over the cameras in its own loop, so no two threads write the same
slot. Arithmetic is float64. The backward recomputes the forward's intermediates (cheaper than
storing [C, N, 3, 3] matrices) and differentiates the torch twin's expression term by term:
normalised quaternion -> R -> Sigma = R S S R^T -> W Sigma W^T -> J (.) J^T -> + eps2d ->
inverse (conic), and the mean -> (u, v, z). Culled entries get zero gradient, like the twin.
Viewmats and intrinsics get no gradient here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_THRESHOLD = 1.0 / 255.0
QUAT_EPS = 1e-12  # torch.nn.functional.normalize's eps
CHUNK = 512  # Gaussians per parallel task (scratch arrays are allocated once per task)


@njit(cache=True, inline="always")
def _rotmat(w, x, y, z, r):
    r[0, 0] = 1 - 2 * (y * y + z * z)
    r[0, 1] = 2 * (x * y - w * z)
    r[0, 2] = 2 * (x * z + w * y)
    r[1, 0] = 2 * (x * y + w * z)
    r[1, 1] = 1 - 2 * (x * x + z * z)
    r[1, 2] = 2 * (y * z - w * x)
    r[2, 0] = 2 * (x * z - w * y)
    r[2, 1] = 2 * (y * z + w * x)
    r[2, 2] = 1 - 2 * (x * x + y * y)


@njit(cache=True, inline="always")
def _world_cov(quats, scales, n, q, r, m, sig):
    """Normalised quaternion q [4] (returns its norm), R [3, 3], M = R S, Sigma = M M^T."""
    nq = math.sqrt(quats[n, 0] ** 2 + quats[n, 1] ** 2 + quats[n, 2] ** 2 + quats[n, 3] ** 2)
    inv = 1.0 / max(nq, QUAT_EPS)
    for i in range(4):
        q[i] = quats[n, i] * inv
    _rotmat(q[0], q[1], q[2], q[3], r)
    for i in range(3):
        for j in range(3):
            m[i, j] = r[i, j] * scales[n, j]
    for i in range(3):
        for j in range(3):
            sig[i, j] = m[i, 0] * m[j, 0] + m[i, 1] * m[j, 1] + m[i, 2] * m[j, 2]
    return nq


@njit(cache=True, inline="always")
def _sandwich(a, s, out):
    """out = A S A^T for A [p, 3], S [3, 3] symmetric."""
    p = a.shape[0]
    for i in range(p):
        for j in range(p):
            acc = 0.0
            for k in range(3):
                for k2 in range(3):
                    acc += a[i, k] * s[k, k2] * a[j, k2]
            out[i, j] = acc


@njit(cache=True, inline="always")
def _camera_terms(viewmats, ks, c, means, n, width, height, w, mc):
    """W [3, 3] of camera c, mean in camera mc [3]; returns (fx, fy, cx, cy, the clamp limits)."""
    for i in range(3):
        acc = viewmats[c, i, 3]
        for j in range(3):
            w[i, j] = viewmats[c, i, j]
            acc += w[i, j] * means[n, j]
        mc[i] = acc
    fx, fy, cx, cy = ks[c, 0, 0], ks[c, 1, 1], ks[c, 0, 2], ks[c, 1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lxp, lxn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lyp, lyn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    return fx, fy, cx, cy, lxp, lxn, lyp, lyn


@njit(parallel=True, cache=True, nogil=True)
def project_forward(
    means,  # [N, 3]
    quats,  # [N, 4]
    scales,  # [N, 3]
    opacities,  # [N] (ignored unless use_opacity)
    use_opacity,
    viewmats,  # [C, 4, 4]
    ks,  # [C, 3, 3]
    width,
    height,
    near,
    far,
    eps2d,
    radius_clip,
    out_xy,  # [C, N, 2] (written; zero where culled)
    out_depth,  # [C, N]
    out_conic,  # [C, N, 3]
    out_radii,  # [C, N, 2] int32
):
    n_g = means.shape[0]
    for chunk in prange((n_g + CHUNK - 1) // CHUNK):
        q = np.empty(4)  # scratch, allocated once per chunk
        r = np.empty((3, 3))
        m = np.empty((3, 3))
        sig = np.empty((3, 3))
        w = np.empty((3, 3))
        sc = np.empty((3, 3))
        mc = np.empty(3)
        jac = np.zeros((2, 3))
        cov = np.empty((2, 2))
        for n in range(chunk * CHUNK, min((chunk + 1) * CHUNK, n_g)):
            _project_one(
                means, quats, scales, opacities, use_opacity, viewmats, ks, width, height,
                near, far, eps2d, radius_clip, out_xy, out_depth, out_conic, out_radii, n,
                q, r, m, sig, w, sc, mc, jac, cov,
            )  # fmt: skip


@njit(cache=True, inline="always")
def _cov2d(w, sig, sc, jac, cov, x, y, z, fx, fy, lxp, lxn, lyp, lyn, eps2d):
    """EWA splatting (gsplat's persp_proj): cov = J (W Sigma W^T) J^T with the Jacobian J taken
    at the clamped (tx, ty, z); returns (tx, ty, a, b, c, det) of cov + eps2d I."""
    _sandwich(w, sig, sc)  # sc = W Sigma W^T
    tx = z * min(lxp, max(-lxn, x / z))
    ty = z * min(lyp, max(-lyn, y / z))
    jac[0, 0] = fx / z
    jac[0, 2] = -fx * tx / (z * z)
    jac[1, 1] = fy / z
    jac[1, 2] = -fy * ty / (z * z)
    _sandwich(jac, sc, cov)
    ca = cov[0, 0] + eps2d
    cb = 0.5 * (cov[0, 1] + cov[1, 0])
    cc = cov[1, 1] + eps2d
    return tx, ty, ca, cb, cc, ca * cc - cb * cb


@njit(cache=True, inline="always")
def _project_one(
    means, quats, scales, opacities, use_opacity, viewmats, ks, width, height, near, far,
    eps2d, radius_clip, out_xy, out_depth, out_conic, out_radii, n, q, r, m, sig, w, sc, mc,
    jac, cov,
):  # fmt: skip
    n_cam = viewmats.shape[0]
    _world_cov(quats, scales, n, q, r, m, sig)
    extend = 3.33
    op_ok = True
    if use_opacity:
        op = opacities[n]
        op_ok = op >= ALPHA_THRESHOLD
        extend = min(extend, math.sqrt(2.0 * math.log(max(op, ALPHA_THRESHOLD) * 255.0)))
    for c in range(n_cam):
        out_xy[c, n, 0] = out_xy[c, n, 1] = out_depth[c, n] = 0.0
        out_conic[c, n, 0] = out_conic[c, n, 1] = out_conic[c, n, 2] = 0.0
        out_radii[c, n, 0] = out_radii[c, n, 1] = 0
        fx, fy, cx, cy, lxp, lxn, lyp, lyn = _camera_terms(
            viewmats, ks, c, means, n, width, height, w, mc
        )
        x, y, z = mc[0], mc[1], mc[2]
        if not (z >= near and z <= far) or not op_ok:
            continue
        tx, ty, ca, cb, cc, det = _cov2d(w, sig, sc, jac, cov, x, y, z, fx, fy, lxp, lxn, lyp,
                                         lyn, eps2d)  # fmt: skip
        if not det > 0:
            continue
        u = fx * x / z + cx
        v = fy * y / z + cy
        rx = math.ceil(extend * math.sqrt(max(ca, 0.0)))
        ry = math.ceil(extend * math.sqrt(max(cc, 0.0)))
        if rx <= radius_clip and ry <= radius_clip:
            continue
        if u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height:
            continue
        if not (math.isfinite(rx) and math.isfinite(ry)):
            continue
        out_xy[c, n, 0] = u
        out_xy[c, n, 1] = v
        out_depth[c, n] = z
        out_conic[c, n, 0] = cc / det
        out_conic[c, n, 1] = -cb / det
        out_conic[c, n, 2] = ca / det
        out_radii[c, n, 0] = int(rx)
        out_radii[c, n, 1] = int(ry)


@njit(parallel=True, cache=True, nogil=True)
def project_backward(
    means,
    quats,
    scales,
    viewmats,
    ks,
    width,
    height,
    eps2d,
    radii,  # [C, N, 2] int32 from the forward (0 = culled: no gradient)
    v_xy,  # [C, N, 2] upstream gradients
    v_depth,  # [C, N]
    v_conic,  # [C, N, 3]
    g_means,  # [N, 3] (written)
    g_quats,  # [N, 4]
    g_scales,  # [N, 3]
):
    n_g = means.shape[0]
    for chunk in prange((n_g + CHUNK - 1) // CHUNK):
        s3 = np.empty((9, 3, 3))  # scratch, allocated once per chunk
        s2 = np.empty((3, 2, 3))
        s1 = np.empty((3, 4))
        for n in range(chunk * CHUNK, min((chunk + 1) * CHUNK, n_g)):
            _backward_one(
                means, quats, scales, viewmats, ks, width, height, eps2d, radii, v_xy,
                v_depth, v_conic, g_means, g_quats, g_scales, n, s3, s2, s1,
            )  # fmt: skip


@njit(cache=True, inline="always")
def _backward_one(
    means, quats, scales, viewmats, ks, width, height, eps2d, radii, v_xy, v_depth, v_conic,
    g_means, g_quats, g_scales, n, s3, s2, s1,
):  # fmt: skip
    n_cam = viewmats.shape[0]
    q, mc, g_mean = s1[0], s1[1, :3], s1[2, :3]
    r, m, sig, w, sc, g_sc, tmp, g_sig, g_r = (
        s3[0],
        s3[1],
        s3[2],
        s3[3],
        s3[4],
        s3[5],
        s3[6],
        s3[7],
        s3[8],
    )
    jac, cov, g2 = s2[0], s2[1, :, :2], s2[2, :, :2]
    jac[:] = 0.0
    g_sig[:] = 0.0  # accumulated over cameras
    g_mean[:] = 0.0
    nq = _world_cov(quats, scales, n, q, r, m, sig)
    for c in range(n_cam):
        if radii[c, n, 0] <= 0 or radii[c, n, 1] <= 0:
            continue
        fx, fy, cx, cy, lxp, lxn, lyp, lyn = _camera_terms(
            viewmats, ks, c, means, n, width, height, w, mc
        )
        x, y, z = mc[0], mc[1], mc[2]
        rxz, ryz = x / z, y / z
        tx, ty, ca, cb, cc, det = _cov2d(w, sig, sc, jac, cov, x, y, z, fx, fy, lxp, lxn, lyp,
                                         lyn, eps2d)  # fmt: skip
        # conic (cc, -cb, ca) / det -> (ca, cb, cc)
        va, vb, vc = v_conic[c, n, 0], v_conic[c, n, 1], v_conic[c, n, 2]
        d2 = det * det
        g_ca = -va * cc * cc / d2 + vb * cb * cc / d2 + vc * (1.0 / det - ca * cc / d2)
        g_cc = va * (1.0 / det - cc * ca / d2) + vb * cb * ca / d2 - vc * ca * ca / d2
        g_cb = 2 * cb * (va * cc - vb * cb + vc * ca) / d2 - vb / det
        g2[0, 0], g2[1, 1] = g_ca, g_cc
        g2[0, 1] = g2[1, 0] = 0.5 * g_cb
        # cov = J Sc J^T: dSc = J^T G J, dJ = 2 G J Sc
        for i in range(3):
            for j in range(3):
                acc = 0.0
                for a in range(2):
                    for b in range(2):
                        acc += jac[a, i] * g2[a, b] * jac[b, j]
                g_sc[i, j] = acc
        gj02 = 0.0
        gj12 = 0.0
        gj00 = 0.0
        gj11 = 0.0
        for b in range(2):
            js0 = jac[b, 0] * sc[0, 0] + jac[b, 1] * sc[1, 0] + jac[b, 2] * sc[2, 0]
            js1 = jac[b, 0] * sc[0, 1] + jac[b, 1] * sc[1, 1] + jac[b, 2] * sc[2, 1]
            js2 = jac[b, 0] * sc[0, 2] + jac[b, 1] * sc[1, 2] + jac[b, 2] * sc[2, 2]
            gj00 += 2 * g2[0, b] * js0
            gj02 += 2 * g2[0, b] * js2
            gj11 += 2 * g2[1, b] * js1
            gj12 += 2 * g2[1, b] * js2
        # J -> (tx, ty, z); clamped ratios give tx = z * lim
        g_x, g_y = 0.0, 0.0
        g_z = v_depth[c, n]
        g_tx = -fx / (z * z) * gj02
        g_ty = -fy / (z * z) * gj12
        g_z += -fx / (z * z) * gj00 - fy / (z * z) * gj11
        g_z += 2 * fx * tx / (z * z * z) * gj02 + 2 * fy * ty / (z * z * z) * gj12
        if -lxn < rxz < lxp:
            g_x += g_tx
        else:
            g_z += g_tx * (lxp if rxz >= lxp else -lxn)
        if -lyn < ryz < lyp:
            g_y += g_ty
        else:
            g_z += g_ty * (lyp if ryz >= lyp else -lyn)
        # (u, v) = (fx x / z + cx, fy y / z + cy)
        gu, gv = v_xy[c, n, 0], v_xy[c, n, 1]
        g_x += gu * fx / z
        g_y += gv * fy / z
        g_z += -gu * fx * x / (z * z) - gv * fy * y / (z * z)
        for j in range(3):  # mean_c = W mean + t
            g_mean[j] += w[0, j] * g_x + w[1, j] * g_y + w[2, j] * g_z
        # Sc = W Sigma W^T: dSigma += W^T dSc W
        for i in range(3):
            for j in range(3):
                tmp[i, j] = g_sc[i, 0] * w[0, j] + g_sc[i, 1] * w[1, j] + g_sc[i, 2] * w[2, j]
        for i in range(3):
            for j in range(3):
                g_sig[i, j] += w[0, i] * tmp[0, j] + w[1, i] * tmp[1, j] + w[2, i] * tmp[2, j]
    for j in range(3):
        g_means[n, j] = g_mean[j]
    # Sigma = M M^T: dM = (dSigma + dSigma^T) M; M = R diag(s)
    for j in range(3):
        g_scales[n, j] = 0.0
    for i in range(3):
        for j in range(3):
            gm = 0.0
            for k in range(3):
                gm += (g_sig[i, k] + g_sig[k, i]) * m[k, j]
            g_r[i, j] = gm * scales[n, j]
            g_scales[n, j] += gm * r[i, j]
    w_, x_, y_, z_ = q[0], q[1], q[2], q[3]
    gw = 2 * (
            -z_ * g_r[0, 1] + y_ * g_r[0, 2] + z_ * g_r[1, 0]
            - x_ * g_r[1, 2] - y_ * g_r[2, 0] + x_ * g_r[2, 1]
        )  # fmt: skip
    gx = 2 * (
            y_ * g_r[0, 1] + z_ * g_r[0, 2] + y_ * g_r[1, 0] - 2 * x_ * g_r[1, 1]
            - w_ * g_r[1, 2] + z_ * g_r[2, 0] + w_ * g_r[2, 1] - 2 * x_ * g_r[2, 2]
        )  # fmt: skip
    gy = 2 * (
            -2 * y_ * g_r[0, 0] + x_ * g_r[0, 1] + w_ * g_r[0, 2] + x_ * g_r[1, 0]
            + z_ * g_r[1, 2] - w_ * g_r[2, 0] + z_ * g_r[2, 1] - 2 * y_ * g_r[2, 2]
        )  # fmt: skip
    gz = 2 * (
            -2 * z_ * g_r[0, 0] - w_ * g_r[0, 1] + x_ * g_r[0, 2] + w_ * g_r[1, 0]
            - 2 * z_ * g_r[1, 1] + y_ * g_r[1, 2] + x_ * g_r[2, 0] + y_ * g_r[2, 1]
        )  # fmt: skip
    if nq > QUAT_EPS:  # normalize: dq = (dqn - qn (qn . dqn)) / |q|
        dot = w_ * gw + x_ * gx + y_ * gy + z_ * gz
        g_quats[n, 0] = (gw - w_ * dot) / nq
        g_quats[n, 1] = (gx - x_ * dot) / nq
        g_quats[n, 2] = (gy - y_ * dot) / nq
        g_quats[n, 3] = (gz - z_ * dot) / nq
    else:
        g_quats[n, 0] = gw / QUAT_EPS
        g_quats[n, 1] = gx / QUAT_EPS
        g_quats[n, 2] = gy / QUAT_EPS
        g_quats[n, 3] = gz / QUAT_EPS


@njit(cache=True, nogil=True)
def bin_tiles(
    x0,  # [I, N] int64 tile rectangle [x0, x1) x [y0, y1), empty when culled
    x1,
    y0,
    y1,
    depths,  # [I, N]
    n_tiles,  # tiles per image
    tiles_x,
    offsets,  # [I * n_tiles + 1] int64 (written)
    flatten_ids,  # [M] int64 (written; M = total intersections)
):
    """CSR per-tile lists, depth-sorted (stable: ties by index), as ``tiles.bin_gaussians``."""
    n_img, n = depths.shape
    offsets[:] = 0
    for i in range(n_img):
        for g in range(n):
            for ty in range(y0[i, g], y1[i, g]):
                for tx in range(x0[i, g], x1[i, g]):
                    offsets[i * n_tiles + ty * tiles_x + tx + 1] += 1
    for t in range(offsets.shape[0] - 1):
        offsets[t + 1] += offsets[t]
    cursor = offsets[:-1].copy()
    for i in range(n_img):
        order = np.argsort(depths[i], kind="mergesort")
        for g in order:
            for ty in range(y0[i, g], y1[i, g]):
                for tx in range(x0[i, g], x1[i, g]):
                    t = i * n_tiles + ty * tiles_x + tx
                    flatten_ids[cursor[t]] = i * n + g
                    cursor[t] += 1
