//! Waiting for every running BPF program to finish: the barrier between
//! flipping `ACTIVE_BANK` and emptying the old bank.
//!
//! A program that read the old bank number just before the flip may still be
//! looking up the old bank's entries; emptying them under it would pass its
//! packet unchecked. The kernel documents one wait a process can ask for: an
//! update of a map-in-map element returns only after an RCU grace period
//! ("Wait for any running non-sleepable BPF programs to complete so that
//! userspace, when we return to it, knows that all non-sleepable programs
//! that could be running use the new map value", `maybe_wait_bpf_programs`
//! in kernel/bpf/syscall.c). XDP and sk_lookup programs run inside RCU
//! read-side sections, so after that update none that read the old bank is
//! still running. `membarrier` would also wait, but skips the wait with one
//! CPU online and fails under nohz_full.
//!
//! The barrier is a private one-slot array of maps, created here without
//! BTF (the XDP object has none), whose slot is set to the same inner map
//! each time. One wait costs about 16-20 ms on a 2-core VM.

use std::os::fd::{FromRawFd, OwnedFd};

use aya::maps::{ArrayOfMaps, Map, MapData, MapError};

#[derive(Debug, thiserror::Error)]
pub enum GraceError {
    #[error("cannot create the grace-period barrier map: {0}")]
    Create(std::io::Error),
    #[error("grace-period barrier: {0}")]
    Map(#[from] MapError),
}

pub struct Grace {
    outer: ArrayOfMaps<MapData, MapData>,
    inner: MapData,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel
/// takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

fn create(map_type: u32, inner: Option<&MapData>) -> Result<MapData, GraceError> {
    use std::os::fd::{AsFd, AsRawFd};
    let attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        inner_map_fd: inner.map_or(0, |m| m.fd().as_fd().as_raw_fd() as u32),
        ..Default::default()
    };
    // SAFETY: attr is a valid, initialised prefix of `union bpf_attr` and
    // its size is passed; the call reads it and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>(),
        )
    };
    if fd < 0 {
        return Err(GraceError::Create(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this fd for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(MapData::from_fd(fd)?)
}

impl Grace {
    pub fn new() -> Result<Self, GraceError> {
        let inner = create(BPF_MAP_TYPE_ARRAY, None)?;
        let outer = create(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(&inner))?;
        let outer = ArrayOfMaps::try_from(Map::from_map_data(outer)?)?;
        Ok(Self { outer, inner })
    }

    /// Returns once every BPF program running when it was called has
    /// finished.
    pub fn wait(&mut self) -> Result<(), GraceError> {
        Ok(self.outer.set(0, &self.inner, 0)?)
    }
}
