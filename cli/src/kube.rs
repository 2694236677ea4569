//! A real Kubernetes API server for the operator's tests and for `make k8s-up`.
//!
//! [`ControlPlane`] runs `scripts/cluster/control-plane.sh`: etcd and kube-apiserver (the
//! version `scripts/cluster/kube-build.sh` caches) on free loopback ports, with a throw-away
//! CA, RBAC and an audit log of every ServiceAccount request. No kubelet and no
//! controller-manager: no pod runs, namespaces never finish deleting, nothing is
//! garbage-collected. The API server itself serves the CRD with its CEL rules, RBAC,
//! TokenRequest, Leases and Events, which is everything the operator talks to.
//!
//! [`ControlPlane::install_chart`] renders `charts/gavel` with `helm template` and applies
//! all of it (CRD, ServiceAccounts, RBAC, Deployments that never get pods), then gives the
//! operator what its pod would have: a token of the chart's operator ServiceAccount (a
//! TokenRequest, as `kubectl create token` makes it) in a kubeconfig, and the literal
//! environment of the chart's operator Deployment. So the operator run with it
//! ([`crate::local::OperatorMode::Kube`]) has exactly the chart's RBAC.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::local::{PlatformError, kubectl_with};

/// The release name the chart is installed with.
pub const RELEASE: &str = "gavel";

/// The repository root (the workspace of this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned()
}

fn script() -> PathBuf {
    repo_root().join("scripts/cluster/control-plane.sh")
}

fn start_error(what: &str, message: impl Into<String>) -> PlatformError {
    PlatformError::Start {
        what: what.to_owned(),
        message: message.into(),
    }
}

/// Runs `control-plane.sh <command> <dir>`; its standard output.
fn run_script(command: &str, dir: &Path) -> Result<String, PlatformError> {
    let out = Command::new("bash")
        .arg(script())
        .arg(command)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| start_error("control-plane.sh", e.to_string()))?;
    if !out.status.success() {
        return Err(start_error(
            &format!("control-plane.sh {command}"),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// etcd and kube-apiserver of this process alone (see the module documentation). Stopped
/// when dropped, or by a watchdog when this process dies.
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    server: String,
}

/// What [`ControlPlane::install_chart`] gives the operator.
#[derive(Clone, Debug)]
pub struct ChartInstall {
    /// The namespace of the release (the operator's Lease lives there).
    pub namespace: String,
    /// The operator ServiceAccount's name.
    pub service_account: String,
    /// A kubeconfig with a token of that ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    /// The literal environment of the chart's operator container (`value:` entries; the
    /// `fieldRef`s to the pod's namespace resolved; Secret references left out).
    pub operator_env: Vec<(String, String)>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with their state in `dir` (created; removed on stop)
    /// and waits until the API server is ready.
    pub fn start(dir: &Path) -> Result<Self, PlatformError> {
        // Stops what the script started once this process is gone, even without Drop.
        crate::servers::run_after_exit(&format!(
            "bash '{}' down '{}' >/dev/null 2>&1",
            script().display(),
            dir.display()
        ));
        let kubeconfig = PathBuf::from(run_script("up", dir)?);
        let ports = std::fs::read_to_string(dir.join("ports")).unwrap_or_default();
        let var = |key: &str| {
            ports
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        let bin = var("BIN").ok_or_else(|| start_error("control-plane.sh", "no BIN in ports"))?;
        let port = var("APISERVER_PORT")
            .ok_or_else(|| start_error("control-plane.sh", "no APISERVER_PORT in ports"))?;
        Ok(Self {
            dir: dir.to_owned(),
            kubeconfig,
            kubectl: Path::new(&bin).join("kubectl"),
            server: format!("https://127.0.0.1:{port}"),
        })
    }

    /// The admin kubeconfig (a client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The `kubectl` of the API server's version.
    pub fn kubectl_program(&self) -> &Path {
        &self.kubectl
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The state folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audit log: one JSON line per request of a ServiceAccount.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Runs `kubectl` as the admin; its standard output.
    pub async fn kubectl(
        &self,
        args: &[&str],
        stdin: Option<String>,
    ) -> Result<String, PlatformError> {
        kubectl_with(&self.kubectl, Some(&self.kubeconfig), args, stdin).await
    }

    /// `kubectl get <what> -o json`, parsed.
    pub async fn get_json(&self, args: &[&str]) -> Result<Value, PlatformError> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all, None).await?;
        serde_json::from_str(&out).map_err(|e| PlatformError::Kubectl {
            args: all.join(" "),
            message: format!("unparsable output: {e}"),
        })
    }

    /// Stops the API server (etcd keeps the data): an API server outage.
    pub fn stop_apiserver(&self) -> Result<(), PlatformError> {
        run_script("stop-apiserver", &self.dir).map(drop)
    }

    /// Starts the API server again on the same port and waits until it is ready.
    pub fn start_apiserver(&self) -> Result<(), PlatformError> {
        run_script("start-apiserver", &self.dir).map(drop)
    }

    /// Renders `charts/gavel` (release [`RELEASE`], `values` as `--set` pairs) into
    /// `namespace`, applies every object, and returns the operator's credentials and
    /// environment. `helm`: `$GAVEL_HELM`, else `tools/bin/helm` (`make tools`), else `helm`.
    pub async fn install_chart(
        &self,
        namespace: &str,
        values: &[&str],
    ) -> Result<ChartInstall, PlatformError> {
        let root = repo_root();
        let helm = std::env::var("GAVEL_HELM")
            .ok()
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| Some(root.join("tools/bin/helm")).filter(|p| p.is_file()))
            .unwrap_or_else(|| PathBuf::from("helm"));
        let raw = self.kubectl(&["get", "--raw", "/version"], None).await?;
        let version: Value =
            serde_json::from_str(&raw).map_err(|e| start_error("/version", e.to_string()))?;
        let git_version = version["gitVersion"]
            .as_str()
            .unwrap_or("v1.37.0")
            .to_owned();
        let mut args: Vec<String> = vec![
            "template".into(),
            RELEASE.into(),
            root.join("charts/gavel").display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--kube-version".into(),
            git_version.trim_start_matches('v').to_owned(),
            "--include-crds".into(),
        ];
        for v in values {
            args.push("--set".into());
            args.push((*v).to_owned());
        }
        let out = tokio::process::Command::new(&helm)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                start_error(
                    "helm",
                    format!(
                        "cannot run {}: {e} (make tools installs it)",
                        helm.display()
                    ),
                )
            })?;
        if !out.status.success() {
            return Err(start_error(
                "helm template",
                String::from_utf8_lossy(&out.stderr),
            ));
        }
        let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
        self.kubectl(&["create", "namespace", namespace], None)
            .await?;
        self.kubectl(&["apply", "-f", "-"], Some(rendered.clone()))
            .await?;
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/auctions.gavel.dev",
                "--timeout=60s",
            ],
            None,
        )
        .await?;
        let deployment = operator_deployment(&rendered)
            .ok_or_else(|| start_error("the chart", "no operator Deployment rendered"))?;
        let pod = &deployment["spec"]["template"]["spec"];
        let service_account = pod["serviceAccountName"]
            .as_str()
            .ok_or_else(|| start_error("the chart", "operator without serviceAccountName"))?
            .to_owned();
        let mut operator_env = Vec::new();
        for e in pod["containers"][0]["env"].as_array().into_iter().flatten() {
            let Some(name) = e["name"].as_str() else {
                continue;
            };
            if let Some(value) = e["value"].as_str() {
                operator_env.push((name.to_owned(), value.to_owned()));
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
                operator_env.push((name.to_owned(), namespace.to_owned()));
            }
        }
        let token = self
            .kubectl(
                &[
                    "create",
                    "token",
                    &service_account,
                    "-n",
                    namespace,
                    "--duration=24h",
                ],
                None,
            )
            .await?;
        let operator_kubeconfig = self.dir.join("operator.kubeconfig");
        write_token_kubeconfig(
            &operator_kubeconfig,
            &self.server,
            &self.dir.join("pki/ca.crt"),
            &format!("system:serviceaccount:{namespace}:{service_account}"),
            token.trim(),
        )?;
        Ok(ChartInstall {
            namespace: namespace.to_owned(),
            service_account,
            operator_kubeconfig,
            operator_env,
        })
    }
}

/// The operator Deployment among the rendered chart's documents.
fn operator_deployment(rendered: &str) -> Option<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(rendered)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .find(|d| {
            d["kind"] == "Deployment"
                && d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        })
}

/// Writes a kubeconfig that authenticates with a bearer token.
pub fn write_token_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    token: &str,
) -> Result<(), PlatformError> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gavel\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: \"{user}\"\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: gavel\n  context: {{cluster: gavel, user: \"{user}\"}}\ncurrent-context: gavel\n",
        ca = ca.display()
    );
    std::fs::write(path, text).map_err(|source| PlatformError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = run_script("down", &self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_operator_deployment() {
        let rendered = "---\nkind: Deployment\nmetadata: {name: a, labels: {app.kubernetes.io/component: bid-api}}\n---\n# comment only\n---\nkind: Deployment\nmetadata: {name: b, labels: {app.kubernetes.io/component: operator}}\n";
        assert_eq!(
            operator_deployment(rendered).unwrap()["metadata"]["name"],
            "b"
        );
        assert!(operator_deployment("kind: Service\n").is_none());
    }
}
