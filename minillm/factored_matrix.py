"""A matrix kept as the product of two factors, M = A @ B, never formed unless asked.

A head's OV circuit W_V[h] @ W_O[h] and QK circuit W_Q[h] @ W_K[h].T are
[d_model, d_model] matrices of rank at most d_head: `model.OV` / `model.QK`
hold them for every layer and head as one FactoredMatrix
[n_layers, n_heads, d_model, d_model]. Its eigenvalues, singular values and
norm come from small [d_head, d_head] problems, as in TransformerLens's class
of the same name (same attributes, same conventions):

    A [..., l, m] @ B [..., m, r] = M [..., l, r]
    svd() -> U [..., l, m], S [..., m], V [..., r, m]  with  M = U @ diag(S) @ V.T
    eigenvalues: of B @ A [..., m, m]  (AB's non-zero eigenvalues are BA's)

Leading axes broadcast; indexing selects along them (and, past them, rows
and columns of M).
"""

from __future__ import annotations

import numpy as np

from minillm.errors import MinillmError


class FactoredMatrix:
    __array_ufunc__ = None  # `array @ FactoredMatrix` calls our __rmatmul__, not NumPy's matmul

    def __init__(self, A: np.ndarray, B: np.ndarray):
        A, B = np.asarray(A), np.asarray(B)
        if A.ndim < 2 or B.ndim < 2:
            raise MinillmError(f"FactoredMatrix needs matrices (ndim >= 2), got A {A.shape}, "
                               f"B {B.shape}")
        if A.shape[-1] != B.shape[-2]:
            raise MinillmError(f"FactoredMatrix factors must match on the inner dimension: "
                               f"A {A.shape}, B {B.shape}")
        try:
            lead = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except ValueError:
            raise MinillmError(f"FactoredMatrix: the leading axes of A {A.shape} and B {B.shape} "
                               "do not broadcast") from None
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.A = np.broadcast_to(A, (*lead, self.ldim, self.mdim))
        self.B = np.broadcast_to(B, (*lead, self.mdim, self.rdim))
        self.shape = (*lead, self.ldim, self.rdim)
        self.has_leading_dims = len(lead) > 0
        self._svd = None

    # --- products ------------------------------------------------------------------------------

    def __matmul__(self, other):
        """M @ other: a FactoredMatrix for a matrix or FactoredMatrix, an array for a vector."""
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        other = np.asarray(other)
        if other.ndim < 2:  # a vector: collapse  [..., l]
            return self.A @ (self.B @ other)
        if other.shape[-2] != self.rdim:
            raise MinillmError(f"cannot multiply {self.shape} by {other.shape}")
        if self.rdim > self.mdim:  # keep the small inner dimension
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other):
        """other @ M."""
        other = np.asarray(other)
        if other.shape[-1] != self.ldim:
            raise MinillmError(f"cannot multiply {other.shape} by {self.shape}")
        if other.ndim < 2:  # a vector  -> [..., r]
            return (other @ self.A) @ self.B
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar) -> FactoredMatrix:
        scalar = np.asarray(scalar)
        if scalar.size != 1:
            raise MinillmError(f"* takes a scalar (got shape {scalar.shape}); use @ for products")
        return FactoredMatrix(self.A * scalar.reshape(()), self.B)

    __rmul__ = __mul__

    @property
    def AB(self) -> np.ndarray:
        """The full matrix [..., l, r] (large: d_model x d_model per head)."""
        return self.A @ self.B

    @property
    def BA(self) -> np.ndarray:
        """The reverse product [..., m, m] (needs l == r)."""
        if self.ldim != self.rdim:
            raise MinillmError(f"BA needs a square matrix, this one is {self.shape}")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        return FactoredMatrix(self.B.swapaxes(-2, -1), self.A.swapaxes(-2, -1))

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        return self.A, self.B

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # --- spectra -------------------------------------------------------------------------------

    def svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(U [..., l, m], S [..., m], V [..., r, m]) with M = U @ diag(S) @ V.T, S descending.

        From the SVDs of the two factors and of the small middle matrix
        S_A V_A.T U_B S_B [m, m], so M is never formed.
        """
        if self._svd is None:
            Ua, Sa, Vha = np.linalg.svd(self.A, full_matrices=False)  # [.., l, m] [.., m] [.., m, m]
            Ub, Sb, Vhb = np.linalg.svd(self.B, full_matrices=False)  # [.., m, m] [.., m] [.., m, r]
            middle = Sa[..., :, None] * (Vha @ Ub) * Sb[..., None, :]  # [..., m, m]
            Um, Sm, Vhm = np.linalg.svd(middle)
            self._svd = (Ua @ Um, Sm, Vhb.swapaxes(-2, -1) @ Vhm.swapaxes(-2, -1))
        return self._svd

    @property
    def U(self) -> np.ndarray:
        return self.svd()[0]

    @property
    def S(self) -> np.ndarray:
        return self.svd()[1]

    @property
    def V(self) -> np.ndarray:
        return self.svd()[2]

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of M's non-zero part: those of BA [..., m] (complex, unordered)."""
        return np.linalg.eigvals(self.BA)

    def norm(self) -> np.ndarray:
        """Frobenius norm [...]: sqrt of the sum of squared singular values."""
        return np.sqrt((self.S**2).sum(-1))

    def make_even(self) -> FactoredMatrix:
        """The same matrix as (U sqrt(S)) @ (sqrt(S) V.T): both factors carry half the spectrum."""
        root = np.sqrt(self.S)
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * self.V.swapaxes(-2, -1))

    def collapse_l(self) -> np.ndarray:
        """S V.T [..., m, r]: M without its left orthogonal factor U."""
        return self.S[..., :, None] * self.V.swapaxes(-2, -1)

    def collapse_r(self) -> np.ndarray:
        """U S [..., l, m]: M without its right orthogonal factor V.T."""
        return self.U * self.S[..., None, :]

    def get_corner(self, k: int = 3) -> np.ndarray:
        """The top-left k x k block of M (of the first matrix along any leading axes)."""
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[(0,) * (corner.ndim - 2)]

    def unsqueeze(self, k: int) -> FactoredMatrix:
        return FactoredMatrix(np.expand_dims(self.A, k), np.expand_dims(self.B, k))

    # --- indexing ------------------------------------------------------------------------------

    def __getitem__(self, idx) -> FactoredMatrix:
        """Index the leading axes; one more index selects rows of M, two more rows and columns.
        An int keeps its axis only past the leading ones (a row or column stays a matrix)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        n_lead = self.ndim - 2
        n = len([i for i in idx if i is not None])
        if n <= n_lead:
            return FactoredMatrix(self.A[idx], self.B[idx])
        if n > self.ndim:
            raise MinillmError(f"{idx} is too long an index for a FactoredMatrix of shape {self.shape}")
        lead, rest = idx[:n_lead], [_keep_axis(i) for i in idx[n_lead:]]
        A = self.A[(*lead, rest[0])]
        B = self.B[lead] if len(rest) == 1 else self.B[(*lead, slice(None), rest[1])]
        return FactoredMatrix(A, B)

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({self.shape}), Hidden Dim({self.mdim})"


def _keep_axis(i):
    """An int index that keeps its axis (i:i+1; -1 -> the last one)."""
    if isinstance(i, (int, np.integer)):
        return slice(i, i + 1 if i != -1 else None)
    return i


def composition_scores(left: FactoredMatrix, right: FactoredMatrix,
                       broadcast_dims: bool = True) -> np.ndarray:
    """|L R|_F / (|L|_F |R|_F) of two factored circuits (Elhage et al.'s composition score).

    With broadcast_dims, the leading axes of left and right form an outer
    product: [*left_lead, *right_lead]."""
    if broadcast_dims:
        r_lead, l_lead = right.ndim - 2, left.ndim - 2
        for i in range(l_lead):
            right = right.unsqueeze(i)
        for i in range(r_lead):
            left = left.unsqueeze(i + l_lead)
    if left.rdim != right.ldim:
        raise MinillmError(f"composition scores need left.rdim == right.ldim, got {left.shape} "
                           f"and {right.shape}")
    new_right, new_left = right.collapse_r(), left.collapse_l()
    norm = lambda m: np.sqrt((m**2).sum((-2, -1)))  # noqa: E731  (Frobenius over the last two)
    return norm(new_left @ new_right) / norm(new_right) / norm(new_left)
