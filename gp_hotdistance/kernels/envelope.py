"""Exact lower envelopes of parabolas along axis 0 of ``(n, m)`` arrays,
run on lanes of :data:`BLOCK` neighbouring lines at once.

Each envelope first tries a windowed minimum over the sites within
``radius`` of each point, vectorised across the lanes and stopped early once
every point is settled; a point is settled, so exact, as soon as its minimum
is no larger than the cost of the nearest site not yet visited. Lanes with a
point still unsettled at ``radius`` (objects far apart) go through the
Felzenszwalb-Huttenlocher envelope instead, so the result is the same either
way, bit for bit (:func:`transform_lanes`).
"""

from __future__ import annotations

import numpy as np

from gp_hotdistance.kernels.threads import jit

# Lines are transformed in lanes of this many neighbouring lines.
BLOCK = 64

# A lane block whose windowed minimum takes more than this many steps per
# point goes through the envelope instead, so a window that fails costs at
# most about half of the envelope's own time on top of it.
_WINDOW_BUDGET = 24


@jit(inline="always")
def _push_site(q, f, weight, k, pos, val, icept, bnum, bden):  # pragma: no cover - jit
    """Push the parabola ``f + weight * (x - q) ** 2`` onto the envelope
    ``0 .. k`` (popping the ones it hides); return the new top index.

    A site at ``q`` with cost ``f`` is kept as ``pos``, ``val`` and its
    intercept ``f + weight * q**2``; two parabolas meet at
    ``(icept_q - icept_p) / (2 * weight * (q - p))``, kept as the fraction
    ``bnum / bden`` (no division on the loop's critical path).
    """
    cq = f + weight * q * q
    num = -np.inf
    den = 1.0
    while k >= 0:
        num = cq - icept[k]
        den = 2.0 * weight * (q - pos[k])
        if num * bden[k] > bnum[k] * den:  # the intersection lies right of k's start
            break
        k -= 1
    k += 1
    pos[k] = q
    val[k] = f
    icept[k] = cq
    bnum[k] = num if k > 0 else -np.inf
    bden[k] = den if k > 0 else 1.0
    return k


@jit()
def _envelope_line(
    native, half, use_half, weight, pos, val, icept, bnum, bden, out
):  # pragma: no cover - jit
    """Lower envelope of parabolas (Felzenszwalb & Huttenlocher 2012) on
    one row: costs ``native[j]`` at ``j`` and, if ``use_half``, ``half[j]``
    at ``j + 0.5`` (``inf``: no site);
    ``out[x] = min cost + weight * (x - position) ** 2``, ``inf`` without sites.
    ``pos``, ``val``, ``icept`` hold ``2n`` and ``bnum``, ``bden`` ``2n + 1``
    entries of scratch.
    """
    n = out.shape[0]
    k = -1
    for j in range(n):
        if native[j] != np.inf:
            k = _push_site(float(j), native[j], weight, k, pos, val, icept, bnum, bden)
        if use_half and j + 1 < n and half[j] != np.inf:
            # a half site no lower than both native neighbours at their own
            # positions lies above them everywhere on the grid: skipped
            at_j = half[j] + 0.25 * weight
            if at_j >= native[j] and at_j >= native[j + 1]:
                continue
            k = _push_site(j + 0.5, half[j], weight, k, pos, val, icept, bnum, bden)
    if k < 0:
        for x in range(n):
            out[x] = np.inf
        return
    bnum[k + 1] = np.inf
    bden[k + 1] = 1.0
    t = 0
    for x in range(n):
        while bnum[t + 1] < x * bden[t + 1]:
            t += 1
        d = x - pos[t]
        out[x] = val[t] + weight * d * d


@jit()
def _windowed_min(
    native, half, has_half, weight, radius, p0, p1, out, q0, failed, inf_row
):  # pragma: no cover - jit
    """Lower envelope along axis 0 of the lanes ``p0 .. p1 - 1`` of ``(n, m)``
    arrays (``native`` costs at ``i``, ``half`` at ``i + 0.5`` if
    ``has_half``), as a windowed minimum into ``out[:, q0 : q0 + p1 - p0]``.

    A point is settled once its minimum is at most the cost of the nearest
    site not yet visited (``weight * r**2`` at distance ``r``); points of
    lanes with ``failed[b] == 0`` are all settled. Lanes with a point not
    settled within ``radius`` get ``failed[b] = 1``. Returns the number of
    failed lanes, or -1 (every lane needs the envelope) once more than half
    of them failed or the search took more than ``_WINDOW_BUDGET`` steps per
    point of a lane; at once if ``radius < 0``.
    """
    n = native.shape[0]
    nb = p1 - p0
    if radius < 0:
        return -1
    for b in range(nb):
        failed[b] = 0
    nfailed = 0
    steps = 0
    for i in range(n):
        row = out[i, q0 : q0 + nb]
        own = native[i, p0:p1]
        nearest = 0.5 if has_half else 1.0
        bound = (weight * nearest) * nearest
        open_points = 0
        for b in range(nb):
            v = own[b]
            row[b] = v
            open_points += (v > bound) & (failed[b] == 0)
        last = max(i, n - 1 - i)  # beyond this distance there is no site
        r = 0
        while open_points > 0 and r < last:
            if r == radius:
                for b in range(nb):
                    if failed[b] == 0 and row[b] > bound:
                        failed[b] = 1
                        nfailed += 1
                if 2 * nfailed > nb:
                    return -1
                break
            r += 1
            steps += 1
            if steps > _WINDOW_BUDGET * n:
                return -1
            c = (weight * r) * r
            up = native[i + r, p0:p1] if i + r < n else inf_row[:nb]
            down = native[i - r, p0:p1] if i - r >= 0 else inf_row[:nb]
            open_points = 0
            if has_half:
                h = r - 0.5
                ch = (weight * h) * h
                half_up = half[i + r - 1, p0:p1] if i + r < n else inf_row[:nb]
                half_down = half[i - r, p0:p1] if i - r >= 0 else inf_row[:nb]
                bound = (weight * (r + 0.5)) * (r + 0.5)
                for b in range(nb):
                    v = min(min(row[b], up[b] + c), down[b] + c)
                    v = min(min(v, half_up[b] + ch), half_down[b] + ch)
                    row[b] = v
                    open_points += (v > bound) & (failed[b] == 0)
            else:
                bound = (weight * (r + 1.0)) * (r + 1.0)
                for b in range(nb):
                    v = min(min(row[b], up[b] + c), down[b] + c)
                    row[b] = v
                    open_points += (v > bound) & (failed[b] == 0)
    return nfailed


@jit()
def lane_scratch(n):  # pragma: no cover - jit
    """Scratch buffers of :func:`transform_lanes` for lines of ``n`` points."""
    half_n = max(n - 1, 1)
    return (
        np.empty(BLOCK, dtype=np.uint8),  # failed
        np.full(BLOCK, np.inf),  # inf_row
        np.empty((BLOCK, n), dtype=np.float64),  # line_native
        np.empty((BLOCK, half_n), dtype=np.float64),  # line_half
        np.empty((BLOCK, n), dtype=np.float64),  # line_out
        np.empty(2 * n, dtype=np.float64),  # pos
        np.empty(2 * n, dtype=np.float64),  # val
        np.empty(2 * n, dtype=np.float64),  # icept
        np.empty(2 * n + 1, dtype=np.float64),  # bnum
        np.empty(2 * n + 1, dtype=np.float64),  # bden
    )


@jit()
def transform_lanes(
    native, half, has_half, weight, radius, p0, p1, out, q0, scratch
):  # pragma: no cover - jit
    """Exact lower envelope along axis 0 of the lanes ``p0 .. p1 - 1`` of
    ``(n, m)`` arrays (see :func:`_windowed_min`), into ``out[:, q0 : q0 + p1
    - p0]``: the windowed minimum, then :func:`_envelope_line` for the lanes it
    did not settle. Returns whether the window was given up for every lane
    (see :func:`_windowed_min`)."""
    failed, inf_row, line_native, line_half, line_out, pos, val, icept, bnum, bden = scratch
    n = native.shape[0]
    nb = p1 - p0
    result = _windowed_min(native, half, has_half, weight, radius, p0, p1, out, q0, failed, inf_row)
    if result == 0:
        return False
    if result < 0:
        for b in range(nb):
            failed[b] = 1
    for i in range(n):
        for b in range(nb):
            if failed[b]:
                line_native[b, i] = native[i, p0 + b]
    if has_half:
        for i in range(n - 1):
            for b in range(nb):
                if failed[b]:
                    line_half[b, i] = half[i, p0 + b]
    for b in range(nb):
        if failed[b]:
            _envelope_line(
                line_native[b],
                line_half[b],
                has_half,
                weight,
                pos,
                val,
                icept,
                bnum,
                bden,
                line_out[b],
            )
    for i in range(n):
        for b in range(nb):
            if failed[b]:
                out[i, q0 + b] = line_out[b, i]
    return result < 0
