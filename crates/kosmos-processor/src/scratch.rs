//! Thread-local reuse of the large working buffers (decoded planes, JPEG coefficients,
//! resize intermediates).
//!
//! Decoding a 2048×1365 JPEG touches ~35 MB of fresh memory; the allocator returns it to
//! the OS after each image, so every decode pays for ~9k page faults, slower than the
//! decode itself. Keeping a few buffers per thread removes that cost. At most
//! [`MAX_KEPT`] buffers of each type and [`MAX_BYTES`] bytes per buffer are kept.

use std::cell::RefCell;

/// Buffers kept per element type and thread.
const MAX_KEPT: usize = 6;
/// Larger buffers are freed instead of kept.
const MAX_BYTES: usize = 256 << 20;

thread_local! {
    static U8: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static I16: RefCell<Vec<Vec<i16>>> = const { RefCell::new(Vec::new()) };
}

fn take<T: Copy + Default>(pool: &RefCell<Vec<Vec<T>>>, len: usize) -> Vec<T> {
    let mut pool = pool.borrow_mut();
    // The smallest kept buffer that fits, else the largest (it will grow).
    let pick = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)
        .or_else(|| {
            pool.iter()
                .enumerate()
                .max_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)
        });
    let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
    v.clear();
    v.resize(len, T::default());
    v
}

fn give<T>(pool: &RefCell<Vec<Vec<T>>>, v: Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() > MAX_BYTES {
        return;
    }
    let mut pool = pool.borrow_mut();
    if pool.len() < MAX_KEPT {
        pool.push(v);
    } else if let Some((i, _)) = pool
        .iter()
        .enumerate()
        .min_by_key(|(_, b)| b.capacity())
        .filter(|(_, b)| b.capacity() < v.capacity())
    {
        pool[i] = v;
    }
}

/// A zero-filled byte buffer of `len`, reusing a kept allocation when possible.
pub(crate) fn take_u8(len: usize) -> Vec<u8> {
    U8.with(|p| take(p, len))
}

/// A byte buffer of `len` whose content is unspecified (old data of a kept buffer, or
/// zeros): for outputs that the caller overwrites entirely.
pub(crate) fn take_u8_dirty(len: usize) -> Vec<u8> {
    U8.with(|p| {
        let mut pool = p.borrow_mut();
        let pick = pool
            .iter()
            .enumerate()
            .filter(|(_, v)| v.len() >= len)
            .min_by_key(|(_, v)| v.len())
            .map(|(i, _)| i);
        match pick {
            Some(i) => {
                let mut v = pool.swap_remove(i);
                v.truncate(len);
                v
            }
            None => {
                drop(pool);
                U8.with(|p| take(p, len))
            }
        }
    })
}

/// Returns a byte buffer for reuse.
pub(crate) fn give_u8(v: Vec<u8>) {
    U8.with(|p| give(p, v));
}

/// A zero-filled i16 buffer of `len`, reusing a kept allocation when possible.
pub(crate) fn take_i16(len: usize) -> Vec<i16> {
    I16.with(|p| take(p, len))
}

/// Returns an i16 buffer for reuse.
pub(crate) fn give_i16(v: Vec<i16>) {
    I16.with(|p| give(p, v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_reused() {
        let mut v = take_u8(1000);
        v.iter_mut().for_each(|x| *x = 7);
        let ptr = v.as_ptr();
        give_u8(v);
        let w = take_u8(500);
        assert_eq!(w.as_ptr(), ptr);
        assert!(w.iter().all(|&x| x == 0));
        assert_eq!(w.len(), 500);
        give_u8(w);
        let z = take_i16(10);
        assert_eq!(z, vec![0i16; 10]);
    }
}
