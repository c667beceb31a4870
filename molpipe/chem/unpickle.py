"""RDKit molecule pickles (``Mol.ToBinary()``) -> compact codes, many molecules in one numba call.

A pickle (RDKit's ``MolPickler``, major version 16) holds everything the features need: per
atom its atomic number, aromatic flag, formal charge, chiral tag, hybridization, explicit and
implicit hydrogens; per bond its atoms, type, conjugation and stereo; then the rings in
``RingInfo.AtomRings()`` order. Degrees, bonds in rings, fragments, the diameter (for the
rounds) and the fused ring systems are worked out here from those. Whatever this decoder does
not read (another major version, query atoms or bonds, monomer info, bond end points, a
molecule without ring information, anything malformed) gets a non-zero status, and the caller
featurizes that molecule with RDKit calls instead (``compact.compact_reference``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from molpipe.chem import compact as C
from molpipe.chem.expand import offsets

PICKLE_MAJOR = 16
OK, BAD_HEADER, QUERY, MONOMER, MALFORMED, NO_RINGS, END_POINTS, TOO_BIG = range(8)
# MolPickler tags (one byte each)
_BEGINATOM, _BEGINBOND, _ATOM_MAPNUMBER, _ATOM_DUMMYLABEL = 1, 11, 24, 44
_RING_TAGS = (20, 66, 67, 68)          # BEGINSSSR, BEGINSYMMSSSR, BEGINFASTFIND, ...OTHER
_ENDIAN = -559038737                   # int32 0xDEADBEEF
_SP3 = 4
_HEADER = 30                           # bytes up to and including the BEGINATOM tag


@njit(nogil=True, cache=True, inline="always")
def _i32(buf, p):
    v = (np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16)
         | (np.int64(buf[p + 3]) << 24))
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@njit(nogil=True, cache=True, inline="always")
def _index(buf, p, wide):
    """An atom index or count: uint8 in pickles of <= 255 atoms, else int32; (value, next p)."""
    if wide:
        return _i32(buf, p), p + 4
    return np.int64(buf[p]), p + 1


@njit(nogil=True, cache=True)
def _decode_one(buf, p, end, min_rounds, max_rounds, atoms, fragment, bonds, bond_codes,
                ring_atoms, ring_sizes, ring_system, a0, b0, r0, q0, bond_type_code, stereo_bits,
                adj_start, adj_atom, adj_bond, dist, queue, mark, parent):
    """Decode the pickle ``buf[p:end]`` into the outputs at positions (a0, b0, r0, q0);
    (status, n_atoms, n_bonds, n_rings, n_ring_atoms, n_rounds)."""
    fail = (MALFORMED, 0, 0, 0, 0, 0)
    if end - p < _HEADER or _i32(buf, p) != _ENDIAN or _i32(buf, p + 4) != 0:
        return (BAD_HEADER, 0, 0, 0, 0, 0)
    if _i32(buf, p + 8) != PICKLE_MAJOR:
        return (BAD_HEADER, 0, 0, 0, 0, 0)
    na, nb = _i32(buf, p + 20), _i32(buf, p + 24)
    if na < 0 or nb < 0 or na > end - p or nb > end - p:
        return fail
    if na > C.MAX_INDEX:
        return (TOO_BIG, 0, 0, 0, 0, 0)
    wide = na > 255
    p += 28                                        # the flag byte
    if buf[p + 1] != _BEGINATOM:
        return fail
    p += 2
    for i in range(na):
        if p + 6 > end:
            return fail
        z, fl = buf[p], buf[p + 1]
        if fl & 0x10:
            return (QUERY, 0, 0, 0, 0, 0)
        if fl & 0x02:
            return (MONOMER, 0, 0, 0, 0, 0)
        pf = _i32(buf, p + 2)
        p += 6
        if pf < 0 or pf > 0x1FF:
            return fail
        charge, chiral, hyb, n_explicit_h, implicit = 0, 0, _SP3, 0, 0
        need = (4 * (pf & 1) + ((pf >> 1) & 1) + ((pf >> 2) & 1) + ((pf >> 3) & 1)
                + ((pf >> 4) & 1) + ((pf >> 5) & 1) + ((pf >> 6) & 1) + ((pf >> 7) & 1)
                + 4 * ((pf >> 8) & 1))
        if p + need > end:
            return fail
        if pf & 1:                                 # old mass offset
            p += 4
        if pf & 2:
            charge = np.int64(buf[p])
            p += 1
        if pf & 4:
            chiral = buf[p]
            p += 1
        if pf & 8:
            hyb = buf[p]
            p += 1
        if pf & 16:
            n_explicit_h = np.int64(buf[p])
            p += 1
        if pf & 32:                                # explicit valence
            p += 1
        if pf & 64:
            implicit = np.int64(buf[p])
            p += 1
        if pf & 128:                               # radical electrons
            p += 1
        if pf & 256:                               # isotope
            p += 4
        if fl & 0x08:                              # atom map number
            if p + 2 > end or buf[p] != _ATOM_MAPNUMBER:
                return fail
            p += 2
            if buf[p - 1] == 255:
                p += 4
        if fl & 0x04:                              # dummy label: a string
            if p + 5 > end or buf[p] != _ATOM_DUMMYLABEL:
                return fail
            length = _i32(buf, p + 1)
            if length < 0:
                return fail
            p += 5 + length
        hs = n_explicit_h + (0 if fl & 0x20 else implicit)
        if hs < 0 or hs > 127 or implicit > 127:
            return fail
        row = a0 + i
        atoms[row, C.Z] = z
        atoms[row, C.DEGREE] = 0
        atoms[row, C.CHARGE] = charge
        atoms[row, C.HS] = hs
        atoms[row, C.HYB] = hyb
        atoms[row, C.CHIRAL] = chiral
        atoms[row, C.FLAGS] = C.AROMATIC if fl & 0x40 else 0
        atoms[row, C.RING_BITS] = 0
    if p >= end or buf[p] != _BEGINBOND:
        return fail
    p += 1
    width = 4 if wide else 1
    adj_start[:na + 1] = 0
    for k in range(nb):
        if p + 2 * width + 1 > end:
            return fail
        i, p = _index(buf, p, wide)
        j, p = _index(buf, p, wide)
        fl = buf[p]
        p += 1
        if fl & 0x10:
            return (QUERY, 0, 0, 0, 0, 0)
        if fl & 0x01:
            return (END_POINTS, 0, 0, 0, 0, 0)
        if i < 0 or j < 0 or i >= na or j >= na or i == j:
            return fail
        bond_type, stereo = 1, 0
        if fl & 0x08:
            if p >= end:
                return fail
            bond_type = buf[p]
            p += 1
        if fl & 0x04:                              # direction
            p += 1
        if fl & 0x02:
            if p + 2 > end:
                return fail
            stereo, count = buf[p], buf[p + 1]
            p += 2 + width * count
        if p > end:
            return fail
        code = bond_type_code[bond_type] | (C.CONJUGATED if fl & 0x20 else 0)
        if (code & C.TYPE_MASK) == 1:              # a double bond
            code |= stereo_bits[stereo]
        bonds[b0 + k, 0] = i
        bonds[b0 + k, 1] = j
        bond_codes[b0 + k] = code
        adj_start[i + 1] += 1
        adj_start[j + 1] += 1
    # adjacency (CSR) of this molecule, and the degrees
    for i in range(na):
        atoms[a0 + i, C.DEGREE] = min(adj_start[i + 1], 255)
        adj_start[i + 1] += adj_start[i]
    fill = adj_start[:na].copy()
    for k in range(nb):
        i, j = bonds[b0 + k, 0], bonds[b0 + k, 1]
        adj_atom[fill[i]], adj_bond[fill[i]] = j, k
        adj_atom[fill[j]], adj_bond[fill[j]] = i, k
        fill[i] += 1
        fill[j] += 1
    # rings, in RingInfo order
    if p + 5 > end:
        return (NO_RINGS, 0, 0, 0, 0, 0)
    tag = buf[p]
    if tag != _RING_TAGS[0] and tag != _RING_TAGS[1] and tag != _RING_TAGS[2] \
            and tag != _RING_TAGS[3]:
        return (NO_RINGS, 0, 0, 0, 0, 0)
    nr = _i32(buf, p + 1)
    p += 5
    if nr < 0 or nr > end - p or r0 + nr > ring_sizes.shape[0]:
        return fail
    q = q0
    lo = 3
    for r in range(nr):
        if p + width > end:
            return fail
        size, p = _index(buf, p, wide)
        if size < 1 or p + size * width > end or q + size > ring_atoms.shape[0]:
            return fail
        for t in range(size):
            a, p = _index(buf, p, wide)
            if a < 0 or a >= na:
                return fail
            ring_atoms[q + t] = a
            atoms[a0 + a, C.FLAGS] |= C.ATOM_IN_RING
            if lo <= size <= lo + 5:
                atoms[a0 + a, C.RING_BITS] |= 1 << (size - lo)
        # the ring's bonds: consecutive atoms, and the last with the first
        for t in range(size):
            a, b = ring_atoms[q + t], ring_atoms[q + (t + 1) % size]
            found = -1
            for e in range(adj_start[a], adj_start[a + 1]):
                if adj_atom[e] == b:
                    found = adj_bond[e]
                    break
            if found < 0:
                return fail
            bond_codes[b0 + found] |= C.IN_RING
        ring_sizes[r0 + r] = size
        q += size
    # fused ring systems: rings sharing two or more atoms (union-find, ids by first ring)
    start = q0
    for r in range(nr):
        parent[r] = r
    for ra in range(nr):
        size_a = ring_sizes[r0 + ra]
        for t in range(size_a):
            mark[ring_atoms[start + t]] = ra + 1
        other = start + size_a
        for rb in range(ra + 1, nr):
            size_b = ring_sizes[r0 + rb]
            shared = 0
            for t in range(size_b):
                if mark[ring_atoms[other + t]] == ra + 1:
                    shared += 1
            if shared >= 2:
                x = rb
                while parent[x] != x:
                    x = parent[x]
                y = ra
                while parent[y] != y:
                    y = parent[y]
                parent[x] = y
            other += size_b
        for t in range(size_a):
            mark[ring_atoms[start + t]] = 0
        start += size_a
    n_ids = 0
    for r in range(nr):                        # mark[] (zeroed) doubles as root -> id + 1
        x = r
        while parent[x] != x:
            x = parent[x]
        if mark[x] == 0:
            n_ids += 1
            mark[x] = n_ids
        ring_system[r0 + r] = mark[x] - 1
    for r in range(nr):
        x = r
        while parent[x] != x:
            x = parent[x]
        mark[x] = 0
    # fragments (numbered by their lowest atom) and the diameter: a BFS from every atom
    diameter = 0
    n_frag = 0
    for s in range(na):
        dist[:na] = -1
        dist[s] = 0
        queue[0] = s
        head, tail = 0, 1
        while head < tail:
            a = queue[head]
            head += 1
            for e in range(adj_start[a], adj_start[a + 1]):
                b = adj_atom[e]
                if dist[b] < 0:
                    dist[b] = dist[a] + 1
                    queue[tail] = b
                    tail += 1
        if dist[queue[tail - 1]] > diameter:
            diameter = dist[queue[tail - 1]]
        lowest = s
        for t in range(tail):
            if queue[t] < lowest:
                lowest = queue[t]
        if lowest == s:
            for t in range(tail):
                fragment[a0 + queue[t]] = n_frag
            n_frag += 1
    rounds = min(max((diameter + 1) // 2, min_rounds), max_rounds)
    return (OK, na, nb, nr, q - q0, rounds)


@njit(nogil=True, cache=True)
def decode_pickles(buf, starts, min_rounds, max_rounds, bond_type_code, stereo_bits):
    """Decode the pickles ``buf[starts[k]:starts[k + 1]]``; the molecules whose status is not
    OK take no room in the outputs.

    Returns (status (n,) int8, atoms (A, 8) u1, fragment (A,) u2, bonds (B, 2) u2,
    bond_codes (B,) u1, ring_atoms (Q,) u2, ring_sizes (R,) u2, ring_system (R,) u2,
    n_atoms, n_bonds, n_rings, n_ring_atoms (n,) i8, n_rounds (n,) i4).
    """
    n = starts.shape[0] - 1
    total_a, total_b, most_a, most_b = 0, 0, 1, 1
    for k in range(n):
        p, end = starts[k], starts[k + 1]
        if end - p >= _HEADER:
            na, nb = _i32(buf, p + 20), _i32(buf, p + 24)
            if 0 <= na <= min(end - p, C.MAX_INDEX) and 0 <= nb <= end - p:
                total_a += na
                total_b += nb
                most_a = max(most_a, na)
                most_b = max(most_b, nb)
    room = buf.shape[0]                            # every ring atom takes at least a byte
    atoms = np.empty((total_a, C.ATOM_CODES), np.uint8)
    fragment = np.empty(total_a, np.uint16)
    bonds = np.empty((total_b, 2), np.uint16)
    bond_codes = np.empty(total_b, np.uint8)
    ring_atoms = np.empty(room, np.uint16)
    ring_sizes = np.empty(room, np.uint16)
    ring_system = np.empty(room, np.uint16)
    status = np.zeros(n, np.int8)
    counts = np.zeros((4, n), np.int64)
    n_rounds = np.zeros(n, np.int32)
    adj_start = np.zeros(most_a + 1, np.int64)
    adj_atom = np.empty(2 * most_b, np.int64)
    adj_bond = np.empty(2 * most_b, np.int64)
    dist = np.empty(most_a, np.int64)
    queue = np.empty(most_a, np.int64)
    mark = np.zeros(max(most_a, room), np.int64)
    parent = np.empty(room, np.int64)
    a0 = b0 = r0 = q0 = 0
    for k in range(n):
        st, na, nb, nr, nq, rounds = _decode_one(
            buf, starts[k], starts[k + 1], min_rounds, max_rounds, atoms, fragment, bonds,
            bond_codes, ring_atoms, ring_sizes, ring_system, a0, b0, r0, q0, bond_type_code,
            stereo_bits, adj_start, adj_atom, adj_bond, dist, queue, mark, parent)
        status[k] = st
        if st != OK:                           # (a failure returns before mark[] is touched)
            continue
        counts[0, k], counts[1, k], counts[2, k], counts[3, k] = na, nb, nr, nq
        n_rounds[k] = rounds
        a0 += na
        b0 += nb
        r0 += nr
        q0 += nq
    return (status, atoms[:a0], fragment[:a0], bonds[:b0], bond_codes[:b0], ring_atoms[:q0],
            ring_sizes[:r0], ring_system[:r0], counts[0], counts[1], counts[2], counts[3],
            n_rounds)


def decode(pickles: list[bytes], min_rounds: int, max_rounds: int) -> tuple[np.ndarray, C.Compact]:
    """(status (n,) int8, the Compact of the molecules whose status is OK, in order)."""
    starts = offsets([len(b) for b in pickles])
    buf = np.frombuffer(b"".join(pickles), np.uint8)
    out = decode_pickles(buf, starts, min_rounds, max_rounds, C.BOND_TYPE_CODE, C.STEREO_BITS)
    status = out[0]
    ok = status == OK
    n_rings = out[10][ok]
    return status, C.Compact(
        atoms=out[1], fragment=out[2], bonds=out[3], bond_codes=out[4], ring_atoms=out[5],
        ring_sizes=out[6], ring_system=out[7], n_atoms=out[8][ok], n_bonds=out[9][ok],
        n_rings=n_rings, n_ring_atoms=out[11][ok], n_rounds=out[12][ok], has_rings=n_rings > 0)
