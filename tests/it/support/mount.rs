//! Filesystems a test mounts for its store (the tests run as root): a small tmpfs, to
//! fill the disk, and an ext4 image mounted with `data=journal`, where the kernel makes
//! a large append visible page by page while it is being written (on a default ext4 the
//! same append becomes visible in a few large steps, so a reader rarely sees it half
//! written; the store must be right on both). Dropping the guard unmounts, also when
//! the test failed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted filesystem; dropping it unmounts it (and detaches its loop device).
pub struct Mounted {
    mount_point: tempfile::TempDir,
    /// The image file of a loop mount, removed after the unmount.
    _image: Option<tempfile::TempDir>,
}

impl Mounted {
    /// A tmpfs of `size` (as `mount -o size=` takes it, e.g. "256k").
    pub fn tmpfs(size: &str) -> Mounted {
        let mount_point = tempfile::tempdir().expect("temp dir");
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], mount_point.path());
        Mounted { mount_point, _image: None }
    }

    /// A fresh ext4 filesystem of `megabytes` (a sparse image) mounted with `data=journal`.
    pub fn ext4_data_journal(megabytes: u64) -> Mounted {
        let image_dir = tempfile::tempdir().expect("temp dir");
        let image = image_dir.path().join("store.ext4");
        let file = std::fs::File::create(&image).expect("create the image file");
        file.set_len(megabytes << 20).expect("size the image file");
        drop(file);
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()]);
        let mount_point = tempfile::tempdir().expect("temp dir");
        mount(&["-t", "ext4", "-o", "loop,data=journal", &image.to_string_lossy()], mount_point.path());
        Mounted { mount_point, _image: Some(image_dir) }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A directory inside it (created).
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("create a directory in the mount");
        dir
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let point = self.mount_point.path().to_string_lossy().to_string();
        let unmounted = Command::new("umount").arg(&point).status().is_ok_and(|status| status.success());
        if !unmounted {
            // Still busy (a server thread finishing): detach it now, the kernel frees it later.
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
    }
}

fn mount(arguments: &[&str], point: &Path) {
    let mut all: Vec<&str> = arguments.to_vec();
    let point = point.to_string_lossy().to_string();
    all.push(&point);
    run("mount", &all);
}

fn run(program: &str, arguments: &[&str]) {
    let output = Command::new(program).args(arguments).output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "this test needs `{program} {}` to work (run as root, with loop devices for ext4): {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("this test needs `{program}` (run as root): {error}"),
    }
}
