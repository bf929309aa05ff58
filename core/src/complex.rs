//! The little complex arithmetic and dense linear algebra the cyclic decoder needs: matrices
//! are at most a few dozen rows, so plain Householder QR in f64 is both simple and stable.

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct C64 {
    pub re: f64,
    pub im: f64,
}

pub const ZERO: C64 = C64 { re: 0.0, im: 0.0 };
pub const ONE: C64 = C64 { re: 1.0, im: 0.0 };

impl C64 {
    pub const fn new(re: f64, im: f64) -> Self {
        C64 { re, im }
    }
    /// exp(i * theta)
    pub fn cis(theta: f64) -> Self {
        C64::new(theta.cos(), theta.sin())
    }
    pub fn conj(self) -> Self {
        C64::new(self.re, -self.im)
    }
    pub fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    pub fn scale(self, k: f64) -> Self {
        C64::new(self.re * k, self.im * k)
    }
    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
}

impl Add for C64 {
    type Output = C64;
    fn add(self, o: C64) -> C64 {
        C64::new(self.re + o.re, self.im + o.im)
    }
}
impl AddAssign for C64 {
    fn add_assign(&mut self, o: C64) {
        *self = *self + o;
    }
}
impl Sub for C64 {
    type Output = C64;
    fn sub(self, o: C64) -> C64 {
        C64::new(self.re - o.re, self.im - o.im)
    }
}
impl Neg for C64 {
    type Output = C64;
    fn neg(self) -> C64 {
        C64::new(-self.re, -self.im)
    }
}
impl Mul for C64 {
    type Output = C64;
    fn mul(self, o: C64) -> C64 {
        C64::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
}
impl Div for C64 {
    type Output = C64;
    fn div(self, o: C64) -> C64 {
        let d = o.norm_sqr();
        C64::new((self.re * o.re + self.im * o.im) / d, (self.im * o.re - self.re * o.im) / d)
    }
}

/// A dense row-major complex matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<C64>,
}

impl Matrix {
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> C64) -> Self {
        Matrix { rows, cols, data: (0..rows * cols).map(|k| f(k / cols, k % cols)).collect() }
    }
    pub fn at(&self, r: usize, c: usize) -> C64 {
        self.data[r * self.cols + c]
    }
    pub fn set(&mut self, r: usize, c: usize, v: C64) {
        self.data[r * self.cols + c] = v;
    }
    /// The rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Matrix {
        Matrix::from_fn(rows.len(), self.cols, |r, c| self.at(rows[r], c))
    }
}

/// Least-squares solution of `a x = b` for a tall (rows >= cols) matrix of full column rank,
/// by Householder QR. Returns `None` when `a` is numerically rank deficient.
pub fn least_squares(a: &Matrix, b: &[C64]) -> Option<Vec<C64>> {
    least_squares_conditioned(a, b).map(|(x, _)| x)
}

/// `least_squares`, also returning a cheap estimate of the condition number of `a` (the ratio
/// of the largest to the smallest diagonal entry of R), used to size noise tolerances.
pub fn least_squares_conditioned(a: &Matrix, b: &[C64]) -> Option<(Vec<C64>, f64)> {
    let (m, n) = (a.rows, a.cols);
    assert!(m >= n && b.len() == m, "least_squares needs a tall system");
    let mut r = a.clone();
    let mut y = b.to_vec();
    let scale = a.data.iter().map(|v| v.abs()).fold(0.0, f64::max);
    for k in 0..n {
        // Householder reflector zeroing column k below the diagonal.
        let norm = (k..m).map(|i| r.at(i, k).norm_sqr()).sum::<f64>().sqrt();
        if norm <= scale * 1e-14 || !norm.is_finite() {
            return None;
        }
        let head = r.at(k, k);
        let phase = if head.abs() == 0.0 { ONE } else { head.scale(1.0 / head.abs()) };
        let alpha = -phase.scale(norm);
        let mut v: Vec<C64> = (k..m).map(|i| r.at(i, k)).collect();
        v[0] = v[0] - alpha;
        let vnorm = v.iter().map(|x| x.norm_sqr()).sum::<f64>();
        // Apply H = I - 2 v v^H / (v^H v) to the remaining columns of R and to y.
        for c in k..n {
            let dot = v.iter().enumerate().fold(ZERO, |acc, (i, vi)| acc + vi.conj() * r.at(k + i, c));
            let factor = dot.scale(2.0 / vnorm);
            for (i, vi) in v.iter().enumerate() {
                r.set(k + i, c, r.at(k + i, c) - *vi * factor);
            }
        }
        let dot = v.iter().enumerate().fold(ZERO, |acc, (i, vi)| acc + vi.conj() * y[k + i]);
        let factor = dot.scale(2.0 / vnorm);
        for (i, vi) in v.iter().enumerate() {
            y[k + i] = y[k + i] - *vi * factor;
        }
    }
    // Back substitution on the upper triangle.
    let mut x = vec![ZERO; n];
    for i in (0..n).rev() {
        let acc = (i + 1..n).fold(y[i], |acc, j| acc - r.at(i, j) * x[j]);
        x[i] = acc / r.at(i, i);
    }
    let diagonal: Vec<f64> = (0..n).map(|i| r.at(i, i).abs()).collect();
    let largest = diagonal.iter().copied().fold(0.0, f64::max);
    let smallest = diagonal.iter().copied().fold(f64::INFINITY, f64::min);
    Some((x, if n == 0 { 1.0 } else { largest / smallest }))
}

/// Solves a small, possibly singular square system `a x = b` in the least-squares sense with a
/// tiny Tikhonov term (minimum-norm-like): (A^H A + lambda I) x = A^H b.
pub fn regularized_solve(a: &Matrix, b: &[C64]) -> Vec<C64> {
    let n = a.cols;
    let frob: f64 = a.data.iter().map(|v| v.norm_sqr()).sum();
    if frob == 0.0 || !frob.is_finite() {
        return vec![ZERO; n];
    }
    let lambda = frob * 1e-14;
    let mut normal = Matrix::from_fn(n, n, |i, j| {
        let dot = (0..a.rows).fold(ZERO, |acc, k| acc + a.at(k, i).conj() * a.at(k, j));
        if i == j { dot + C64::new(lambda, 0.0) } else { dot }
    });
    let mut rhs: Vec<C64> = (0..n).map(|i| (0..a.rows).fold(ZERO, |acc, k| acc + a.at(k, i).conj() * b[k])).collect();
    // Gaussian elimination with partial pivoting; the matrix is Hermitian positive definite.
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&p, &q| normal.at(p, col).abs().total_cmp(&normal.at(q, col).abs())).unwrap_or(col);
        if pivot != col {
            for c in 0..n {
                let tmp = normal.at(col, c);
                normal.set(col, c, normal.at(pivot, c));
                normal.set(pivot, c, tmp);
            }
            rhs.swap(col, pivot);
        }
        let diag = normal.at(col, col);
        if diag.abs() == 0.0 {
            continue;
        }
        for row in col + 1..n {
            let factor = normal.at(row, col) / diag;
            for c in col..n {
                let v = normal.at(row, c) - factor * normal.at(col, c);
                normal.set(row, c, v);
            }
            rhs[row] = rhs[row] - factor * rhs[col];
        }
    }
    let mut x = vec![ZERO; n];
    for i in (0..n).rev() {
        let acc = (i + 1..n).fold(rhs[i], |acc, j| acc - normal.at(i, j) * x[j]);
        let diag = normal.at(i, i);
        x[i] = if diag.abs() == 0.0 { ZERO } else { acc / diag };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_an_exact_solution() {
        let a = Matrix::from_fn(5, 3, |i, j| C64::cis((i * (j + 1)) as f64 * 0.7).scale(1.0 + j as f64));
        let x = [C64::new(1.0, -2.0), C64::new(0.5, 0.25), C64::new(-3.0, 1.0)];
        let b: Vec<C64> = (0..5).map(|i| (0..3).fold(ZERO, |acc, j| acc + a.at(i, j) * x[j])).collect();
        let got = least_squares(&a, &b).unwrap();
        for (g, w) in got.iter().zip(&x) {
            assert!((*g - *w).abs() < 1e-12, "{g:?} vs {w:?}");
        }
        let singular = Matrix::from_fn(4, 2, |i, _| C64::new(i as f64, 0.0));
        assert!(least_squares(&singular, &[ZERO; 4]).is_none());
    }

    #[test]
    fn regularized_solve_handles_singular_systems() {
        let a = Matrix::from_fn(2, 2, |_, _| ONE);
        let x = regularized_solve(&a, &[C64::new(2.0, 0.0), C64::new(2.0, 0.0)]);
        assert!((x[0] - C64::new(1.0, 0.0)).abs() < 1e-6 && (x[1] - C64::new(1.0, 0.0)).abs() < 1e-6, "{x:?}");
        let zero = regularized_solve(&Matrix::from_fn(2, 2, |_, _| ZERO), &[ZERO, ZERO]);
        assert!(zero.iter().all(|v| v.is_finite()));
    }
}
