//! Carving typed, aligned sub-buffers out of the caller's scratch bytes, safely.

use super::KernelError;
use bytemuck::Pod;

/// Bytes needed for `n` values of `T` carved by [`Scratch::take`], alignment padding included.
pub(crate) const fn bytes_for<T>(n: usize) -> usize {
    n * core::mem::size_of::<T>() + core::mem::align_of::<T>() - 1
}

/// The unused rest of a scratch buffer.
pub(crate) struct Scratch<'a> {
    rest: &'a mut [u8],
}

impl<'a> Scratch<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Scratch { rest: buf }
    }

    /// The bytes not taken yet.
    pub(crate) fn rest(self) -> &'a mut [u8] {
        self.rest
    }

    /// The next `n` values of `T`, zeroed.
    pub(crate) fn take<T: Pod>(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<&'a mut [T], KernelError> {
        let rest = core::mem::take(&mut self.rest);
        let have = rest.len();
        let pad = rest.as_ptr().align_offset(core::mem::align_of::<T>());
        let need = n
            .checked_mul(core::mem::size_of::<T>())
            .and_then(|b| b.checked_add(pad));
        let Some(need) = need.filter(|&b| b <= have) else {
            return Err(KernelError::BadLength {
                what,
                need: bytes_for::<T>(n),
                have,
            });
        };
        let (_, rest) = rest.split_at_mut(pad);
        let (mine, rest) = rest.split_at_mut(need - pad);
        self.rest = rest;
        mine.fill(0);
        bytemuck::try_cast_slice_mut(mine).map_err(|_| KernelError::BadParam { what })
    }
}
