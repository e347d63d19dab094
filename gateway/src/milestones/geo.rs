//! Geofence geometry: the signed distance from a position to a fence's boundary.
//!
//! Invariant: [`Fence::signed_distance_m`] is negative inside the fence and positive outside,
//! and its magnitude is the distance to the boundary in metres: the great-circle (haversine)
//! distance for a circle, the distance to the nearest edge in a local equirectangular
//! projection centred on the polygon for a polygon. The hysteresis band of a stop
//! (`entry_band_m`, `exit_band_m`) is applied to this one number, so a circle and a polygon
//! behave the same at their border.
//!
//! The projection is the one the position logger uses (`pipeline::positions::local_xy`); over a
//! fence's few hundred metres to a few kilometres its error is far below GNSS accuracy.

use serde::{Deserialize, Serialize};

use crate::pipeline::positions::{haversine_m, local_xy, segment_distance};

/// A compiled geofence, ready for point tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fence {
    /// Every point within `radius_m` of the centre.
    Circle {
        /// Centre latitude, degrees.
        lat: f64,
        /// Centre longitude, degrees.
        lon: f64,
        /// Radius, metres.
        radius_m: f64,
    },
    /// A simple polygon (closed implicitly), projected around `origin`.
    Polygon {
        /// Projection origin (the vertices' mean), `(lat, lon)` degrees.
        origin: (f64, f64),
        /// Vertices in metres east and north of `origin`.
        xy: Vec<(f64, f64)>,
    },
}

impl Fence {
    /// A polygon fence from `(lat, lon)` vertices (at least 3; validated by the manifest).
    pub fn polygon(vertices: &[(f64, f64)]) -> Fence {
        #[allow(clippy::cast_precision_loss)] // at most a few hundred vertices
        let n = vertices.len().max(1) as f64;
        let lat0 = vertices.iter().map(|v| v.0).sum::<f64>() / n;
        // Longitudes averaged as offsets from the first vertex, so a fence across the
        // antimeridian gets a sensible origin.
        let first = vertices.first().map_or(0.0, |v| v.1);
        let dlon = vertices
            .iter()
            .map(|v| (v.1 - first + 540.0).rem_euclid(360.0) - 180.0)
            .sum::<f64>()
            / n;
        let lon0 = ((first + dlon) + 540.0).rem_euclid(360.0) - 180.0;
        let xy = vertices
            .iter()
            .map(|v| local_xy(lat0, lon0, v.0, v.1))
            .collect();
        Fence::Polygon {
            origin: (lat0, lon0),
            xy,
        }
    }

    /// Metres from `(lat, lon)` to the boundary: negative inside, positive outside.
    pub fn signed_distance_m(&self, lat: f64, lon: f64) -> f64 {
        match self {
            Fence::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => haversine_m(*clat, *clon, lat, lon) - radius_m,
            Fence::Polygon { origin, xy } => {
                let p = local_xy(origin.0, origin.1, lat, lon);
                let edge = edge_distance(p, xy);
                if contains(p, xy) { -edge } else { edge }
            }
        }
    }

    /// A point of the fence to show in events: the centre of a circle, the projection origin
    /// of a polygon.
    pub fn centre(&self) -> (f64, f64) {
        match self {
            Fence::Circle { lat, lon, .. } => (*lat, *lon),
            Fence::Polygon { origin, .. } => *origin,
        }
    }
}

/// Even-odd rule point-in-polygon.
pub fn contains(p: (f64, f64), poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0;
            if p.0 < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Distance from `p` to the nearest edge of the closed polygon.
pub fn edge_distance(p: (f64, f64), poly: &[(f64, f64)]) -> f64 {
    let n = poly.len();
    (0..n)
        .map(|i| segment_distance(p, poly[i], poly[(i + 1) % n]))
        .fold(f64::INFINITY, f64::min)
}

/// Whether the closed polygon has two non-adjacent edges that cross (a bow tie), in which
/// case inside and outside are ambiguous. Quadratic; the manifest bounds the vertex count.
pub fn self_intersects(poly: &[(f64, f64)]) -> Option<(usize, usize)> {
    let n = poly.len();
    for i in 0..n {
        for j in i + 1..n {
            // Adjacent edges share a vertex; the first and the last edge too.
            if j == i + 1 || (i == 0 && j == n - 1) {
                continue;
            }
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let (c, d) = (poly[j], poly[(j + 1) % n]);
            if segments_cross(a, b, c, d) {
                return Some((i, j));
            }
        }
    }
    None
}

fn orient(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> f64 {
    (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0)
}

fn segments_cross(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    let (o1, o2) = (orient(a, b, c), orient(a, b, d));
    let (o3, o4) = (orient(c, d, a), orient(c, d, b));
    (o1 * o2 < 0.0) && (o3 * o4 < 0.0)
}

/// Area of the polygon in square metres (shoelace).
pub fn area_m2(poly: &[(f64, f64)]) -> f64 {
    let n = poly.len();
    let twice: f64 = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    twice.abs() / 2.0
}

/// The point `metres` from `(lat, lon)` towards `bearing_deg` (spherical; for tests and the
/// benchmark's synthetic tracks).
pub fn offset(lat: f64, lon: f64, bearing_deg: f64, metres: f64) -> (f64, f64) {
    const R: f64 = 6_371_008.8;
    let d = metres / R;
    let (lat1, lon1, b) = (lat.to_radians(), lon.to_radians(), bearing_deg.to_radians());
    let lat2 = (lat1.sin() * d.cos() + lat1.cos() * d.sin() * b.cos()).asin();
    let lon2 = lon1 + (b.sin() * d.sin() * lat1.cos()).atan2(d.cos() - lat1.sin() * lat2.sin());
    (lat2.to_degrees(), lon2.to_degrees())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MUNICH: (f64, f64) = (48.137, 11.575);

    #[test]
    fn circle_distance_is_signed() {
        let f = Fence::Circle {
            lat: MUNICH.0,
            lon: MUNICH.1,
            radius_m: 100.0,
        };
        for (m, want) in [(0.0, -100.0), (50.0, -50.0), (100.0, 0.0), (250.0, 150.0)] {
            let p = offset(MUNICH.0, MUNICH.1, 37.0, m);
            let got = f.signed_distance_m(p.0, p.1);
            assert!((got - want).abs() < 0.01, "{m} m: {got}");
        }
    }

    fn square(side_m: f64) -> Fence {
        let h = side_m / 2.0;
        let corner = |e: f64, n: f64| {
            let p = offset(MUNICH.0, MUNICH.1, 90.0, e);
            offset(p.0, p.1, 0.0, n)
        };
        Fence::polygon(&[corner(-h, -h), corner(h, -h), corner(h, h), corner(-h, h)])
    }

    #[test]
    fn polygon_distance_is_signed_and_to_the_nearest_edge() {
        let f = square(200.0);
        // Centre: 100 m from every edge.
        assert!((f.signed_distance_m(MUNICH.0, MUNICH.1) + 100.0).abs() < 0.5);
        // 30 m north of the north edge.
        let p = offset(MUNICH.0, MUNICH.1, 0.0, 130.0);
        assert!((f.signed_distance_m(p.0, p.1) - 30.0).abs() < 0.5);
        // 20 m inside from the east edge.
        let p = offset(MUNICH.0, MUNICH.1, 90.0, 80.0);
        assert!((f.signed_distance_m(p.0, p.1) + 20.0).abs() < 0.5);
        // Beyond a corner: the distance to the corner.
        let p = offset(MUNICH.0, MUNICH.1, 45.0, 100.0 * 2f64.sqrt() + 50.0);
        assert!((f.signed_distance_m(p.0, p.1) - 50.0).abs() < 1.0);
    }

    #[test]
    fn concave_polygon_and_bow_tie() {
        // An L shape: the notch is outside.
        let l = [
            (0.0, 0.0),
            (100.0, 0.0),
            (100.0, 40.0),
            (40.0, 40.0),
            (40.0, 100.0),
            (0.0, 100.0),
        ];
        assert!(contains((20.0, 80.0), &l));
        assert!(!contains((80.0, 80.0), &l));
        assert!((edge_distance((80.0, 80.0), &l) - 40.0).abs() < 1e-9);
        assert_eq!(self_intersects(&l), None);
        assert!((area_m2(&l) - 6400.0).abs() < 1e-9);
        let bow = [(0.0, 0.0), (10.0, 10.0), (10.0, 0.0), (0.0, 10.0)];
        assert_eq!(self_intersects(&bow), Some((0, 2)));
    }

    #[test]
    fn polygon_across_the_antimeridian() {
        let f = Fence::polygon(&[
            (-17.0, 179.999),
            (-17.0, -179.999),
            (-17.002, -179.999),
            (-17.002, 179.999),
        ]);
        assert!(f.signed_distance_m(-17.001, 180.0) < 0.0);
        assert!(f.signed_distance_m(-17.001, 179.99) > 0.0);
    }

    proptest! {
        /// The polygon and the circle agree on a regular 64-gon inscribed in the circle,
        /// within the sagitta of one edge.
        #[test]
        fn polygon_approximates_circle(r in 50.0f64..2000.0, b in 0.0f64..360.0, k in 0.0f64..2.5) {
            let verts: Vec<(f64, f64)> = (0..64)
                .map(|i| offset(MUNICH.0, MUNICH.1, f64::from(i) * 360.0 / 64.0, r))
                .collect();
            let poly = Fence::polygon(&verts);
            let circle = Fence::Circle { lat: MUNICH.0, lon: MUNICH.1, radius_m: r };
            let p = offset(MUNICH.0, MUNICH.1, b, r * k);
            let sagitta = r * (1.0 - (std::f64::consts::PI / 64.0).cos());
            let (dp, dc) = (poly.signed_distance_m(p.0, p.1), circle.signed_distance_m(p.0, p.1));
            prop_assert!((dp - dc).abs() <= sagitta + 0.01 * r.max(1.0) / 10.0 + 0.5, "{dp} vs {dc}");
        }
    }
}
