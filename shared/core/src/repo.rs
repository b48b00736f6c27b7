//! Matching repositories: a project's `repo` against the URLs a GitHub
//! payload carries.

/// A comparable key for a repository location:
/// `https://github.com/Owner/Name.git`, `git@github.com:owner/name`,
/// `ssh://git@github.com/owner/name` → `github.com/owner/name`;
/// local paths and `file://` URLs → the path without a trailing `/` or `.git`.
pub fn repo_key(repo: &str) -> String {
    let mut s = repo.trim().to_string();
    if let Some(rest) = s.strip_prefix("file://") {
        s = rest.to_string();
    } else if let Some((scheme, rest)) = s.split_once("://") {
        let _ = scheme;
        // Drop credentials and port: `user:pw@host:443/path` → `host/path`.
        let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.split(':').next().unwrap_or(host);
        s = format!("{}/{}", host.to_lowercase(), path.to_lowercase());
    } else if let Some((user_host, path)) = s.split_once(':').filter(|(h, _)| h.contains('@') && !h.contains('/')) {
        // scp-like syntax: git@github.com:owner/name.git
        let host = user_host.rsplit_once('@').map(|(_, h)| h).unwrap_or(user_host);
        s = format!("{}/{}", host.to_lowercase(), path.to_lowercase());
    }
    let s = s.trim_end_matches('/');
    s.strip_suffix(".git").unwrap_or(s).trim_end_matches('/').to_string()
}

/// Is `repo` a remote URL (as opposed to a local path)?
pub fn is_remote(repo: &str) -> bool {
    repo.contains("://") && !repo.starts_with("file://")
        || repo.split_once(':').is_some_and(|(h, _)| h.contains('@') && !h.contains('/'))
}

/// Does a project's repo match a GitHub payload's `full_name` (`owner/name`)?
pub fn matches_full_name(project_key: &str, full_name: &str) -> bool {
    let full = full_name.to_lowercase();
    !full.is_empty() && (project_key == full || project_key.ends_with(&format!("/{full}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = "github.com/owner/name";
        for url in [
            "https://github.com/Owner/Name.git",
            "https://github.com/owner/name",
            "https://user:tok@github.com/owner/name/",
            "git@github.com:owner/name.git",
            "ssh://git@github.com:22/owner/name.git",
            "git://github.com/owner/name.git",
        ] {
            assert_eq!(repo_key(url), k, "{url}");
        }
        assert_eq!(repo_key("/tmp/repos/app/"), "/tmp/repos/app");
        assert_eq!(repo_key("file:///tmp/repos/app.git"), "/tmp/repos/app");
        assert!(is_remote("https://x/y") && is_remote("git@h:o/n") && !is_remote("/tmp/x") && !is_remote("file:///x"));
        assert!(matches_full_name(k, "Owner/Name"));
        assert!(!matches_full_name(k, "owner/other") && !matches_full_name(k, ""));
    }
}
