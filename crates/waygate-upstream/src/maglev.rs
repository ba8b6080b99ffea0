//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! prime size M filled from each server's permutation, so a key maps to a
//! server in O(1) and removing one of N servers moves about 1/N of the keys.
//! Weights give a server proportionally more turns while filling.

use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

/// Table size: a prime well above 100 × servers.
fn table_size(n: usize) -> usize {
    const PRIMES: [usize; 4] = [65_537, 655_373, 1_310_719, 5_000_011];
    PRIMES
        .into_iter()
        .find(|&p| p >= n * 100)
        .unwrap_or(5_000_011)
}

pub(crate) fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

// === impl Maglev ===

impl Maglev {
    /// Builds the table for servers named `names` with `weights`.
    pub(crate) fn new(names: &[&str], weights: &[u32]) -> Self {
        let n = names.len();
        if n == 0 {
            return Self { table: Vec::new() };
        }
        let m = table_size(n);
        let params: Vec<(usize, usize)> = names
            .iter()
            .map(|name| {
                let offset = (hash_of((name, 0xa5u8)) % m as u64) as usize;
                let skip = (hash_of((name, 0x5au8)) % (m as u64 - 1) + 1) as usize;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
        // Each round, server i gets a turn with probability weight/max_w,
        // decided deterministically by a credit counter.
        let mut credit = vec![0u32; n];
        'fill: loop {
            for i in 0..n {
                credit[i] += weights[i].max(1);
                if credit[i] < max_w {
                    continue;
                }
                credit[i] -= max_w;
                let (offset, skip) = params[i];
                loop {
                    let slot = (offset + next[i] * skip) % m;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        Self { table }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The server at slot `(key + probe) mod M`.
    pub(crate) fn lookup(&self, key: u64, probe: usize) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let m = self.table.len();
        let slot = ((key % m as u64) as usize + probe) % m;
        Some(self.table[slot] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth_of_keys() {
        let ten = names(10);
        let refs: Vec<&str> = ten.iter().map(String::as_str).collect();
        let full = Maglev::new(&refs, &[1; 10]);
        let nine = Maglev::new(&refs[..9], &[1; 9]);
        let keys = 100_000u64;
        let mut moved = 0;
        for k in 0..keys {
            let key = hash_of(k);
            let a = full.lookup(key, 0).unwrap();
            let b = nine.lookup(key, 0).unwrap();
            if a != b {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        assert!(share <= 0.15, "{share:.3} of keys moved");
        assert!(
            share >= 0.05,
            "{share:.3}: the removed server's keys must move"
        );
    }

    #[test]
    fn weights_shape_the_table() {
        let two = names(2);
        let refs: Vec<&str> = two.iter().map(String::as_str).collect();
        let m = Maglev::new(&refs, &[3, 1]);
        let first = (0..m.len())
            .filter(|&s| m.lookup(s as u64, 0) == Some(0))
            .count();
        let share = first as f64 / m.len() as f64;
        assert!((share - 0.75).abs() < 0.02, "share {share}");
    }
}
