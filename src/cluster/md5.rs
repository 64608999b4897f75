//! The "MD5" TFRA uses for `using_md5_prefix_name`. TFRA compiles the RSA reference code
//! with a 32-bit word type that is 64 bits wide on LP64 Linux, so additions do not wrap at
//! 2^32 and rotations pull high bits back down. The digest therefore differs from real MD5;
//! this reproduces it bit for bit so MD5-prefixed tables stay readable across backends.

const S: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// Sine-derived round constants, in round order.
fn constants() -> [u64; 64] {
    let mut k = [0u64; 64];
    for (i, v) in k.iter_mut().enumerate() {
        *v = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u64;
    }
    k
}

fn message_index(round: usize, step: usize) -> usize {
    match round {
        0 => step,
        1 => (1 + 5 * step) % 16,
        2 => (5 + 3 * step) % 16,
        _ => (7 * step) % 16,
    }
}

fn transform(state: &mut [u64; 4], block: &[u8], k: &[u64; 64]) {
    let mut x = [0u64; 16];
    for (i, w) in x.iter_mut().enumerate() {
        *w = u64::from(u32::from_le_bytes(
            block[4 * i..4 * i + 4].try_into().unwrap(),
        ));
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for round in 0..4 {
        for step in 0..16 {
            let f = match round {
                0 => (b & c) | (!b & d),
                1 => (b & d) | (c & !d),
                2 => b ^ c ^ d,
                _ => c ^ (b | !d),
            };
            let s = S[round][step % 4];
            let mut t = a
                .wrapping_add(f)
                .wrapping_add(x[message_index(round, step)])
                .wrapping_add(k[16 * round + step]);
            // The reference rotate on a 64-bit word: bits above 32 survive and shift down.
            t = (t << s) | (t >> (32 - s));
            t = t.wrapping_add(b);
            (a, b, c, d) = (d, t, b, c);
        }
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// TFRA's digest of `input` (16 bytes).
pub fn tfra_md5(input: &[u8]) -> [u8; 16] {
    let k = constants();
    let mut state: [u64; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = input.to_vec();
    let bits = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    // Bit count as two 32-bit little-endian words, as the reference's Encode writes them.
    msg.extend_from_slice(&(bits as u32).to_le_bytes());
    msg.extend_from_slice(&((input.len() as u64 >> 29) as u32).to_le_bytes());
    for block in msg.chunks(64) {
        transform(&mut state, block, &k);
    }
    let mut out = [0u8; 16];
    for (i, s) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&(*s as u32).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_digests_written_by_tfra() {
        // Read back from a Redis key written by TFRA 0.8.1's backend for table `compat`.
        assert_eq!(
            &tfra_md5(b"test:compat"),
            b"?\x9c\xfd\x82\xc8\xd9\xab'\x9e&\xc8\x15Z\xbd_\xa7"
        );
    }

    #[test]
    fn is_not_standard_md5() {
        use md5::{Digest, Md5};
        assert_ne!(
            tfra_md5(b"test:emb").to_vec(),
            Md5::digest(b"test:emb").to_vec()
        );
    }
}
