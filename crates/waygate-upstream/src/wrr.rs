//! Smooth weighted round robin (nginx's algorithm), precomputed into a
//! schedule so a pick is one atomic increment: with weights 5, 1, 1 the
//! schedule is a a b a c a a — spread out, never bursts of one server.

/// The schedule of server indices for `weights` (one cycle, length = sum).
pub(crate) fn schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn smooth_and_exact() {
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(schedule(&[1, 1]), vec![0, 1]);
        let s = schedule(&[3, 2]);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        assert!(schedule(&[]).is_empty());
    }
}
