//! The name a process goes by in shared tables (connector instances, worker leases).

/// `<hostname>-<pid>`: unique per live process, and it says where the process runs.
pub fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_ends_with_this_process_id() {
        // Proves two processes on one host get different names.
        let name = default_instance_name();
        let (host, pid) = name.rsplit_once('-').expect("<host>-<pid>");
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
    }
}
