"""The stored mesh triangles are what the triangulation makes (no scipy.spatial at run time)."""

import numpy as np

from swapcli.analyse import mesh


def test_stored_triangles_match_the_triangulation():
    stored = mesh.triangles()
    made = mesh.triangulate()
    assert stored.shape == made.shape and stored.shape[1] == 3
    np.testing.assert_array_equal(stored, made)
