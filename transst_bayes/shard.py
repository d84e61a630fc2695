"""Spots over several devices with JAX's own machinery (`jax.sharding`).

A fit on several devices uses a one-axis `Mesh` (axis "spots"): every array indexed by spot
(the target's expression rows or factor scores, the responsibilities, the neighbour index, its
mask and colours, the spot weights) is split across the devices by rows (`NamedSharding` with
`PartitionSpec("spots")`); the global parameters (loadings, noise, domain parameters, beta, tau,
kappa) are small and replicated. The EM programs are the one-device programs: `jax.jit`
partitions them over the mesh (GSPMD), which turns the sums over spots into per-device partial
sums and one all-reduce, and gathers the (n, K) responsibilities for the Potts neighbour sums, so
sums across shard borders are exact (up to the order of floating-point additions).

Rows are padded to a multiple of the number of devices, and on one device too where a fit asks
for more rows (`EMSettings.spot_rows`: the held-out fits of a source's sections, padded alike so
that they run the same compiled programs). A padded spot has zero expression,
weight 0 (it adds nothing to any sum over spots), no neighbours (mask 0, its own index) and
colour -1 (no sweep updates it, so its responsibilities stay 0); fits drop it before returning.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import mrf

AXIS = "spots"


class Layout(NamedTuple):
    """Where the spots live: `mesh` None is the default device (no padding)."""
    mesh: Mesh | None
    n: int  # real spots
    n_pad: int  # rows after padding (a multiple of the number of devices)

    @property
    def n_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size


def mesh(devices) -> Mesh | None:
    """The mesh of `devices`: None (the default device: no mesh), "all" (every device JAX
    sees), a sequence of `jax.Device` or of device indices into `jax.devices()`, or a
    one-axis `Mesh` (its axis is used for spots). One device gives None."""
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if devices.devices.ndim != 1:
            raise ValueError(f"devices: a Mesh with one axis is needed (spots are split along it), "
                             f"got axes {devices.axis_names}; build Mesh(np.array(jax.devices()), ('spots',))")
        found = list(devices.devices.flat)
    elif isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices must be None, 'all', a list of devices or a Mesh, got {devices!r}")
        found = jax.devices()
    else:
        try:
            items = list(devices)
        except TypeError:
            raise TypeError(f"devices must be None, 'all', a list of devices or a Mesh, got "
                            f"{type(devices).__name__}") from None
        if not items:
            raise ValueError("devices is an empty list; pass None for the default device")
        every = jax.devices()
        found = []
        for d in items:
            if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
                if not 0 <= int(d) < len(every):
                    raise ValueError(f"devices: index {int(d)} is out of range; JAX sees {len(every)} "
                                     f"device(s) (jax.devices())")
                found.append(every[int(d)])
            elif isinstance(d, jax.Device):
                found.append(d)
            else:
                raise TypeError(f"devices: each entry must be a jax.Device or an index into "
                                f"jax.devices(), got {type(d).__name__}")
        if len(set(found)) != len(found):
            raise ValueError("devices lists a device more than once")
    if len(found) == 1:
        return None
    return devices if isinstance(devices, Mesh) else Mesh(np.array(found), (AXIS,))


def layout(n: int, m: Mesh | None, rows: int = 0) -> Layout:
    """Rows padded up to at least `rows` (0: no padding on one device) and up to a multiple of
    the mesh's device count."""
    n_pad = max(n, rows)
    if m is None:
        return Layout(None, n, n_pad)
    d = m.devices.size
    return Layout(m, n, -(-n_pad // d) * d)


def _axis(lay: Layout) -> str:
    return lay.mesh.axis_names[0]


def rows(x, lay: Layout, dtype=None, fill=0):
    """`x` (spots first) padded with `fill` to `lay.n_pad` rows and split by rows over the mesh
    (on one device: `jax.device_put`, which on the CPU shares a 64-byte-aligned array of the
    right dtype instead of copying it: data.prepare makes the expression so)."""
    if lay.mesh is None and lay.n_pad == lay.n:
        if isinstance(x, jax.Array):
            return x if dtype is None else x.astype(dtype)
        return jax.device_put(np.asarray(x, dtype))
    if lay.mesh is None and isinstance(x, jax.Array):  # prepared on the device: padded there
        x = x if dtype is None else x.astype(dtype)
        return jnp.concatenate([x, jnp.full((lay.n_pad - x.shape[0],) + x.shape[1:], fill, x.dtype)])
    x = np.asarray(x, dtype)
    if lay.n_pad > x.shape[0]:
        x = np.concatenate([x, np.full((lay.n_pad - x.shape[0],) + x.shape[1:], fill, x.dtype)])
    if lay.mesh is None:
        return jax.device_put(x)
    spec = PartitionSpec(_axis(lay), *([None] * (x.ndim - 1)))
    return _place(x, NamedSharding(lay.mesh, spec))


def _place(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array: each process puts only the
    shards its own devices hold (one process: a plain `device_put`)."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def weights(lay: Layout, dtype, always: bool = False):
    """(n_pad,) 1 for a real spot, 0 for padding; None without padding (every row a spot: the
    kernels then run the unweighted sums, the one-device programs unchanged) unless `always`
    (a fit padded alike with others that are: the same program whether or not it has padding)."""
    if lay.n == lay.n_pad and not always:
        return None
    return rows(np.ones(lay.n, dtype), lay, dtype, fill=0)


def total(x, w, axis=None):
    """sum over spots (axis 0) of x, each row weighted by w (None: every row a spot)."""
    if w is None:
        return jnp.sum(x, axis=axis)
    return jnp.sum(w.reshape(w.shape + (1,) * (x.ndim - 1)) * x, axis=axis)


def mean(x, w, axis=None):
    """Mean over spots (axis 0) of x (padded rows left out)."""
    if w is None:
        return jnp.mean(x, axis=axis)
    return total(x, w, axis) / jnp.sum(w)


def count(X, w):
    """The number of spots among the rows of X."""
    return X.shape[0] if w is None else jnp.sum(w)


def graph(g: mrf.Graph, lay: Layout, dtype) -> mrf.Graph:
    """The neighbour graph on the mesh: padded spots have themselves as their only (masked)
    neighbour and colour -1; the real spots' lists are unchanged (they never name padding)."""
    if lay.n == lay.n_pad:
        return mrf.on_device(g, dtype)
    nbr = np.asarray(g.nbr, np.int32)
    pad = np.arange(lay.n, lay.n_pad, dtype=np.int32)
    nbr = np.concatenate([nbr, np.repeat(pad[:, None], nbr.shape[1], axis=1)])
    return mrf.Graph(rows(nbr, lay), rows(g.mask, lay, dtype), rows(g.colors, lay, np.int32, fill=-1),
                     int(g.n_colors))


def waiter(lay: Layout):
    """What a caller applies to each result of a loop of compiled calls: over a mesh, wait for
    it before the next call is queued (XLA's CPU runtime deadlocked in the rendezvous of the
    cross-device sums with several sharded calls queued at once: 4 host devices, 2 cores); on
    one device, nothing (calls stay asynchronous)."""
    return jax.block_until_ready if lay.mesh is not None else (lambda x: x)


def real(x, lay: Layout):
    """The real spots' rows of a padded array, readable on this process (with several
    processes, `jax.distributed`, the shards of the other hosts are gathered first)."""
    if lay.mesh is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return x if lay.n == lay.n_pad else x[: lay.n]
