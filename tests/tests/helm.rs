//! The Helm chart (`deploy/helm/comet`), rendered with `helm template` and checked two ways:
//!
//! - **Invariants of the rendered documents**: an even controller count is refused; every
//!   workload has probes, a hardened security context and resources; every cluster workload has
//!   a PodDisruptionBudget; the Raft peers and the controllers list match the replica count and
//!   the stable DNS names; `config:` values reach their role's ConfigMap (and every setting of
//!   `deploy/comet.example.toml` can, as a config Comet loads); keys the chart renders are
//!   refused in `config:`; clients are never given a pod IP.
//! - **The rendered-cluster test**: `values-ha.yaml` rendered, and every pod of it started as the
//!   kubelet would start it, from the built `comet` binary: its command and args, its
//!   environment (downward-API fields and `$(VAR)` references expanded), and its mounted
//!   ConfigMap. Each pod gets its own loopback address (127.0.0.x), so ports repeat as in a
//!   cluster, and every cluster DNS name the chart uses (pods of headless Services, ClusterIP
//!   Services) resolves to it through `/etc/hosts`, bind-mounted in a private mount namespace
//!   (`unshare`) that the test re-executes itself in. The official Rust client then produces and
//!   consumes through the proxy Service's name; a broker master is SIGKILLed and its set fails
//!   over; the Raft leader is SIGKILLed and the cluster carries on.
//!
//! Two stand-ins for what a real cluster does, and nothing else: a volume's mount path (in the
//! container spec and in the mounted config file) is mapped to a directory of the test, as the
//! kubelet mounts it; and a ClusterIP Service's name resolves to its first pod. What only a real
//! cluster checks: image pulls, the kubelet's probe timings, scheduling (affinity, PDBs, HPA),
//! PVC binding, Service load balancing, and `spec.ordinals`/pod-index labels being honoured.
//!
//! helm is `COMET_HELM`, else `helm` on PATH. Without it these tests only print that they were
//! skipped, unless `COMET_HELM_REQUIRED` is set (`.ci/run` sets it, after installing helm with
//! `deploy/ci/chart-tools.sh`), which makes its absence a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::{client, raw, wait_until};
use rocketmq::model::message::MessageBuilder;
use serde_json::Value;

const RELEASE: &str = "comet";
const NAMESPACE: &str = "comet";
const DOMAIN: &str = "cluster.local";
const KUBE_VERSION: &str = "1.31.0";
const VALUES_FILES: [Option<&str>; 4] = [
    None,
    Some("values-single-node.yaml"),
    Some("values-ha.yaml"),
    Some("values-external.yaml"),
];
const CLUSTER_VALUES: [Option<&str>; 3] =
    [None, Some("values-ha.yaml"), Some("values-external.yaml")];

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/comet")
}

/// The helm binary, or `None` (the test is skipped) when there is none and none is required.
fn helm() -> Option<PathBuf> {
    let candidate =
        std::env::var_os("COMET_HELM").map_or_else(|| PathBuf::from("helm"), PathBuf::from);
    let runs = Command::new(&candidate)
        .args(["version", "--short"])
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("COMET_HELM_REQUIRED").is_none(),
        "COMET_HELM_REQUIRED is set but helm ({}) does not run: install it with \
         `. deploy/ci/chart-tools.sh` (it exports COMET_HELM)",
        candidate.display()
    );
    eprintln!("helm not found (set COMET_HELM or put helm on PATH): chart test skipped");
    None
}

/// The documents `helm template` rendered.
struct Rendered {
    docs: Vec<Value>,
}

fn render(helm: &Path, values: Option<&str>, sets: &[&str]) -> Result<Rendered, String> {
    render_with(helm, values.map(|v| chart().join(v)).as_deref(), sets)
}

fn render_with(helm: &Path, values: Option<&Path>, sets: &[&str]) -> Result<Rendered, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", RELEASE]).arg(chart()).args([
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]);
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().expect("helm runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    // helm separates documents with a `---` line; block scalars (the TOML) are indented, so
    // the separator never occurs inside one.
    let docs = text
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .map(|d| serde_norway::from_str::<Value>(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    Ok(Rendered { docs })
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let kind = kind.to_owned();
        self.docs.iter().filter(move |d| d["kind"] == kind.as_str())
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.docs
            .iter()
            .filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
    }

    /// The `comet.toml` of ConfigMap `name`, parsed.
    fn config(&self, name: &str) -> toml::Table {
        let text = self.get("ConfigMap", name)["data"]["comet.toml"]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {name} has comet.toml"));
        text.parse()
            .unwrap_or_else(|e| panic!("ConfigMap {name}: comet.toml is not TOML: {e}\n{text}"))
    }

    /// Every ConfigMap with a `comet.toml`, by name.
    fn configs(&self) -> BTreeMap<String, toml::Table> {
        self.of_kind("ConfigMap")
            .map(|d| {
                let name = str_of(&d["metadata"]["name"]);
                let cfg = self.config(&name);
                (name, cfg)
            })
            .collect()
    }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

fn name_of(d: &Value) -> String {
    str_of(&d["metadata"]["name"])
}

fn controller_addrs(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            format!("comet-controller-{i}.comet-controller-headless.{NAMESPACE}.svc.{DOMAIN}:9878")
        })
        .collect()
}

fn toml_strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(toml::Value::as_array)
        .expect("a TOML array")
        .iter()
        .map(|s| s.as_str().expect("a TOML string").to_owned())
        .collect()
}

fn section<'a>(cfg: &'a toml::Table, name: &str) -> &'a toml::Table {
    cfg.get(name)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("[{name}] section missing"))
}

#[test]
fn given_an_even_controller_count_when_rendered_should_refuse_it_with_a_clear_message() {
    let Some(helm) = helm() else { return };
    for n in [2, 4] {
        let err = render(&helm, None, &[&format!("controller.replicas={n}")])
            .err()
            .unwrap_or_else(|| panic!("{n} controllers rendered"));
        assert!(
            err.contains(&format!("controller.replicas = {n}")) && err.contains("odd"),
            "{err}"
        );
    }
    for n in [1, 3, 5] {
        render(&helm, None, &[&format!("controller.replicas={n}")])
            .unwrap_or_else(|e| panic!("{n} controllers: {e}"));
    }
}

#[test]
fn given_any_values_file_when_rendered_should_give_every_workload_probes_a_hardened_context_and_resources()
 {
    let Some(helm) = helm() else { return };
    for values in VALUES_FILES {
        let r = render(&helm, values, &[]).expect("renders");
        let mut workloads = 0;
        for w in r.workloads() {
            workloads += 1;
            let what = format!("{values:?}: {} {}", w["kind"], name_of(w));
            let pod = &w["spec"]["template"]["spec"];
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{what}");
            assert!(psc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{what}");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
            assert!(
                pod["terminationGracePeriodSeconds"]
                    .as_u64()
                    .is_some_and(|s| s >= 30),
                "{what}: the grace period must outlast Comet's drain (5 s) and store close"
            );
            assert!(
                w["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string(),
                "{what}: no config checksum"
            );
            for c in pod["containers"].as_array().expect("containers") {
                let ports: Vec<&Value> = c["ports"].as_array().expect("ports").iter().collect();
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    let p = &c[probe];
                    assert!(p.is_object(), "{what}: no {probe}");
                    let port = if p["grpc"].is_object() {
                        &p["grpc"]["port"]
                    } else {
                        &p["tcpSocket"]["port"]
                    };
                    assert!(
                        ports
                            .iter()
                            .any(|q| q["name"] == *port || q["containerPort"] == *port),
                        "{what}: {probe} checks port {port}, which the container does not declare"
                    );
                }
                let res = &c["resources"];
                for (kind, key) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                ] {
                    assert!(
                        !res[kind][key].is_null(),
                        "{what}: no resources.{kind}.{key}"
                    );
                }
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
            }
        }
        let expected = if values == Some("values-single-node.yaml") {
            1
        } else if values == Some("values-ha.yaml") {
            4
        } else {
            3
        };
        assert_eq!(workloads, expected, "{values:?}: workloads");
    }
}

#[test]
fn given_cluster_values_when_rendered_should_give_every_workload_a_disruption_budget() {
    let Some(helm) = helm() else { return };
    for values in CLUSTER_VALUES {
        let r = render(&helm, values, &[]).expect("renders");
        for w in r.workloads() {
            let labels = w["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .expect("pod labels");
            let pdb = r
                .of_kind("PodDisruptionBudget")
                .find(|p| {
                    p["spec"]["selector"]["matchLabels"]
                        .as_object()
                        .expect("PDB selector")
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
                })
                .unwrap_or_else(|| panic!("{values:?}: no PDB selects {}", name_of(w)));
            if name_of(w) == "comet-controller" {
                let n = w["spec"]["replicas"].as_u64().expect("replicas");
                assert_eq!(pdb["spec"]["minAvailable"], n / 2 + 1, "quorum");
            } else {
                assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{}", name_of(w));
            }
        }
    }
}

#[test]
fn given_a_controller_count_when_rendered_should_list_every_peer_by_its_stable_dns_name() {
    let Some(helm) = helm() else { return };
    for n in [1usize, 3, 5] {
        let r = render(
            &helm,
            Some("values-ha.yaml"),
            &[&format!("controller.replicas={n}")],
        )
        .expect("renders");
        let addrs = controller_addrs(n);
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let cfg = r.config("comet-controller");
        assert_eq!(
            toml_strings(section(&cfg, "controller").get("peers")),
            peers
        );
        for (name, cfg) in r.configs() {
            assert_eq!(toml_strings(cfg.get("controllers")), addrs, "{name}");
        }
        let sts = r.get("StatefulSet", "comet-controller");
        assert_eq!(sts["spec"]["replicas"], n);
        assert_eq!(sts["spec"]["ordinals"]["start"], 1, "pod ordinal = node id");
        assert_eq!(sts["spec"]["serviceName"], "comet-controller-headless");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let headless = r.get("Service", "comet-controller-headless");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        // Each pod advertises the address its peers list for it.
        for (i, addr) in addrs.iter().enumerate() {
            let pod = Pod::of(&r, sts, i + 1, Ipv4Addr::new(127, 0, 0, 2));
            assert_eq!(pod.env["COMET_CONTROLLER_ADVERTISED_ADDR"], *addr);
            assert_eq!(pod.env["COMET_CONTROLLER_NODE_ID"], (i + 1).to_string());
        }
    }
}

#[test]
fn given_config_values_when_rendered_should_reach_only_their_roles_configmap_and_roll_its_pods() {
    let Some(helm) = helm() else { return };
    let base = render(&helm, Some("values-ha.yaml"), &[]).expect("renders");
    let r = render(
        &helm,
        Some("values-ha.yaml"),
        &[
            "config.log.level=debug",
            "controller.config.controller.broker_lease=5s",
            "brokers.config.broker.max_retries=3",
            "proxy.config.proxy.auto_create_topics=true",
        ],
    )
    .expect("renders");
    let configs = r.configs();
    for (name, cfg) in &configs {
        assert_eq!(
            section(cfg, "log")["level"].as_str(),
            Some("debug"),
            "{name}"
        );
        let lease = cfg.get("controller").and_then(|c| c.get("broker_lease"));
        let retries = cfg.get("broker").and_then(|c| c.get("max_retries"));
        let auto = cfg.get("proxy").and_then(|c| c.get("auto_create_topics"));
        assert_eq!(
            lease.and_then(toml::Value::as_str),
            (name == "comet-controller").then_some("5s"),
            "{name}"
        );
        assert_eq!(
            retries.and_then(toml::Value::as_integer),
            name.starts_with("comet-broker-").then_some(3),
            "{name}"
        );
        assert_eq!(
            auto.and_then(toml::Value::as_bool),
            (name == "comet-proxy").then_some(true),
            "{name}"
        );
    }
    // A set's own config wins over the common one, for that set only.
    let r2 = render(
        &helm,
        Some("values-ha.yaml"),
        &[
            "brokers.config.broker.max_retries=3",
            "brokers.sets[0].name=broker-a",
            "brokers.sets[0].replicas=3",
            "brokers.sets[0].storage.size=1Gi",
            "brokers.sets[0].resources.requests.cpu=1",
            "brokers.sets[0].resources.requests.memory=1Gi",
            "brokers.sets[0].resources.limits.memory=2Gi",
            "brokers.sets[0].config.broker.max_retries=7",
        ],
    )
    .expect("renders");
    assert_eq!(
        section(&r2.config("comet-broker-a"), "broker")["max_retries"].as_integer(),
        Some(7)
    );
    // The checksum annotation changes exactly for the pods whose config changed.
    for w in r.workloads() {
        let name = name_of(w);
        let sum = |r: &Rendered, kind: &str| {
            r.get(kind, &name)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                .clone()
        };
        let kind = str_of(&w["kind"]);
        assert_ne!(
            sum(&r, &kind),
            sum(&base, &kind),
            "{name}: config changed, pods must roll"
        );
    }
    let only_proxy = render(
        &helm,
        Some("values-ha.yaml"),
        &["proxy.config.proxy.io_threads=2"],
    )
    .expect("renders");
    for w in only_proxy.workloads() {
        let name = name_of(w);
        let kind = str_of(&w["kind"]);
        let a = &only_proxy.get(&kind, &name)["spec"]["template"]["metadata"]["annotations"];
        let b = &base.get(&kind, &name)["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(a == b, name != "comet-proxy", "{name}");
    }
}

/// Keys each role's chart renders itself (from other values, or per pod).
fn chart_owned(role: &str) -> &'static [&'static str] {
    match role {
        "controller" => &[
            "data_dir",
            "controllers",
            "controller.listen",
            "controller.advertised_addr",
            "controller.node_id",
            "controller.peers",
            "controller.join",
            "controller.remoting_listen",
            "console.listen",
            "metrics.listen",
        ],
        "broker" => &[
            "data_dir",
            "controllers",
            "broker.listen",
            "broker.advertised_addr",
            "broker.broker_set",
            "broker.broker_id",
            "broker.replication_mode",
            "broker.min_in_sync_replicas",
            "metrics.listen",
        ],
        "proxy" => &[
            "data_dir",
            "controllers",
            "proxy.listen",
            "proxy.advertised_endpoint",
            "metrics.listen",
        ],
        other => panic!("unknown role {other}"),
    }
}

/// Equal settings, where a whole float (`1.0`) may come back as an integer (`1`): Helm reads
/// every number of the values as a float and writes a whole one without its fraction; Comet
/// reads an integer wherever it expects a float.
fn same_setting(rendered: &toml::Value, given: &toml::Value) -> bool {
    match (rendered, given) {
        (toml::Value::Integer(i), toml::Value::Float(f)) => (*i as f64) == *f,
        (a, b) => a == b,
    }
}

#[test]
fn given_every_example_setting_in_config_when_rendered_should_reach_the_configmap_as_a_config_comet_loads()
 {
    let Some(helm) = helm() else { return };
    let example: toml::Table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/comet.example.toml"),
    )
    .expect("example config")
    .parse()
    .expect("example config parses");
    let without = |owned: &[&str]| {
        let mut t = example.clone();
        for key in owned {
            match key.split_once('.') {
                Some((s, k)) => {
                    t.get_mut(s)
                        .and_then(toml::Value::as_table_mut)
                        .expect("section")
                        .remove(k);
                }
                None => {
                    t.remove(*key);
                }
            }
        }
        serde_json::to_value(t).expect("as JSON")
    };
    let values = serde_json::json!({
        "controller": {"config": without(chart_owned("controller"))},
        "brokers": {"config": without(chart_owned("broker"))},
        "proxy": {"config": without(chart_owned("proxy"))},
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("every-setting.yaml");
    std::fs::write(&file, serde_norway::to_string(&values).expect("YAML")).expect("write values");
    let r = render_with(&helm, Some(&file), &[]).expect("renders");
    for (name, cfg) in r.configs() {
        let role = if name == "comet-controller" {
            "controller"
        } else if name == "comet-proxy" {
            "proxy"
        } else {
            "broker"
        };
        let mut given = 0;
        for (sname, sv) in &example {
            let Some(stable) = sv.as_table() else {
                continue;
            };
            for (k, v) in stable {
                if chart_owned(role).contains(&format!("{sname}.{k}").as_str()) {
                    continue;
                }
                given += 1;
                let got = cfg.get(sname).and_then(|s| s.get(k));
                assert!(
                    got.is_some_and(|g| same_setting(g, v)),
                    "{name}: {sname}.{k} = {got:?}, given {v:?}"
                );
            }
        }
        assert!(given >= 40, "{name}: only {given} settings checked");
        // And the rendered file is a configuration Comet accepts.
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("TOML")).expect("write config");
        comet::config::Config::load(&comet::config::Sources {
            file: Some(path),
            ..comet::config::Sources::default()
        })
        .unwrap_or_else(|e| panic!("{name}: Comet refuses the rendered config: {e:#}"));
    }
}

#[test]
fn given_a_chart_rendered_key_in_config_when_rendered_should_refuse_it_naming_the_value_to_use() {
    let Some(helm) = helm() else { return };
    for (set, needles) in [
        (
            "controller.config.controller.peers[0]=1=x:1",
            ["controller.peers", "controller.replicas"],
        ),
        (
            "controller.config.controller.node_id=2",
            ["controller.node_id", "pod ordinal"],
        ),
        (
            "brokers.config.broker.replication_mode=sync",
            ["broker.replication_mode", "replicationMode"],
        ),
        (
            "proxy.config.proxy.advertised_endpoint=x:1",
            ["proxy.advertised_endpoint", "proxy.advertisedEndpoint"],
        ),
        ("config.data_dir=/x", ["data_dir", "/var/lib/comet"]),
        (
            "controller.config.console.listen=x:1",
            ["console.listen", "controller.ports.console"],
        ),
        (
            "proxy.config.metrics.listen=x:1",
            ["metrics.listen", "metrics.port"],
        ),
        (
            "proxy.service.type=LoadBalancer",
            ["advertisedEndpoint", "LoadBalancer"],
        ),
        (
            "brokers.antiAffinity=sometimes",
            ["brokers.antiAffinity", "sometimes"],
        ),
    ] {
        let err = render(&helm, None, &[set])
            .err()
            .unwrap_or_else(|| panic!("--set {set} rendered"));
        for needle in needles {
            assert!(err.contains(needle), "--set {set}: {err}");
        }
    }
}

#[test]
fn given_any_values_file_when_rendered_should_give_clients_no_pod_ip() {
    let Some(helm) = helm() else { return };
    for values in VALUES_FILES {
        let r = render(&helm, values, &[]).expect("renders");
        let (cm, expected) = match values {
            Some("values-single-node.yaml") => (
                "comet",
                format!("comet-proxy.{NAMESPACE}.svc.{DOMAIN}:8081"),
            ),
            Some("values-external.yaml") => ("comet-proxy", "mq.example.com:8081".to_owned()),
            _ => (
                "comet-proxy",
                format!("comet-proxy.{NAMESPACE}.svc.{DOMAIN}:8081"),
            ),
        };
        let advertised = section(&r.config(cm), "proxy")["advertised_endpoint"]
            .as_str()
            .expect("advertised endpoint")
            .to_owned();
        assert_eq!(advertised, expected, "{values:?}");
        let host = advertised.rsplit_once(':').expect("host:port").0;
        assert!(
            host.parse::<std::net::IpAddr>().is_err(),
            "{values:?}: {advertised}"
        );
        // The pod IP is used to listen on, nowhere else (advertised addresses are DNS names).
        for w in r.workloads() {
            for c in w["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers")
            {
                for e in c["env"].as_array().expect("env") {
                    let name = str_of(&e["name"]);
                    let uses_ip = e["value"].as_str().is_some_and(|v| v.contains("$(POD_IP)"))
                        || e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP";
                    assert!(
                        !uses_ip
                            || name.ends_with("_LISTEN")
                            || name == "POD_IP"
                            || name == "COMET_CONTROLLERS",
                        "{values:?} {}: {name} uses the pod IP",
                        name_of(w)
                    );
                }
            }
        }
    }
}

// ---- The rendered-cluster test ----

/// Set in the re-executed test process: the hosts file it runs under.
const INNER_ENV: &str = "COMET_HELM_CLUSTER_HOSTS";
const CLUSTER_TEST: &str = "given_the_ha_values_when_started_as_rendered_should_serve_fail_over_and_survive_a_controller_loss";

/// One pod of a rendered workload, as the kubelet would run its (first) container.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    /// The workload (StatefulSet or Deployment) it belongs to.
    workload: String,
    ip: Ipv4Addr,
    /// Its DNS name through its StatefulSet's headless Service.
    dns: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    command: Vec<String>,
    args: Vec<String>,
    /// Environment in declaration order, `$(VAR)` references and downward-API fields resolved.
    env: BTreeMap<String, String>,
    env_order: Vec<String>,
    container: Value,
    volumes: Vec<Value>,
}

/// Expands the kubelet's `$(VAR)` references (`$$` escapes a `$`); unknown ones stay as they are.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
            && let Some(v) = env.get(&t[..end])
        {
            out.push_str(v);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

impl Pod {
    /// Pod `ordinal` (StatefulSet) or number `ordinal` (Deployment) of workload `w`.
    fn of(r: &Rendered, w: &Value, ordinal: usize, ip: Ipv4Addr) -> Pod {
        let workload = name_of(w);
        let name = format!("{workload}-{ordinal}");
        let template = &w["spec"]["template"];
        let mut labels: BTreeMap<String, String> = template["metadata"]["labels"]
            .as_object()
            .expect("pod labels")
            .iter()
            .map(|(k, v)| (k.clone(), str_of(v)))
            .collect();
        let annotations = template["metadata"]["annotations"]
            .as_object()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), str_of(v))).collect())
            .unwrap_or_default();
        let dns = if w["kind"] == "StatefulSet" {
            labels.insert("apps.kubernetes.io/pod-index".into(), ordinal.to_string());
            labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
            let svc = str_of(&w["spec"]["serviceName"]);
            // The headless Service must exist and select the pod, or the name never resolves.
            let headless = r.get("Service", &svc);
            assert_eq!(headless["spec"]["clusterIP"], "None", "{svc} is headless");
            Some(format!("{name}.{svc}.{NAMESPACE}.svc.{DOMAIN}"))
        } else {
            None
        };
        let container = template["spec"]["containers"][0].clone();
        let mut env = BTreeMap::new();
        let mut env_order = Vec::new();
        for e in container["env"].as_array().expect("env") {
            let key = str_of(&e["name"]);
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else {
                let field = str_of(&e["valueFrom"]["fieldRef"]["fieldPath"]);
                match field.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => NAMESPACE.to_owned(),
                    "status.podIP" => ip.to_string(),
                    f => {
                        let label = f
                            .strip_prefix("metadata.labels['")
                            .and_then(|l| l.strip_suffix("']"))
                            .unwrap_or_else(|| panic!("{name}: unsupported fieldRef {f}"));
                        labels
                            .get(label)
                            .unwrap_or_else(|| panic!("{name}: no label {label}"))
                            .clone()
                    }
                }
            };
            env.insert(key.clone(), value);
            env_order.push(key);
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| expand(&str_of(s), &env)).collect())
                .unwrap_or_default()
        };
        Pod {
            command: strings(&container["command"]),
            args: strings(&container["args"]),
            name,
            workload,
            ip,
            dns,
            labels,
            annotations,
            env,
            env_order,
            volumes: template["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            container,
        }
    }

    fn port(&self, p: &Value) -> u16 {
        let declared = self.container["ports"].as_array().expect("ports");
        let n = match p {
            Value::String(name) => declared
                .iter()
                .find(|q| q["name"] == *name)
                .unwrap_or_else(|| panic!("{}: no port named {name}", self.name))["containerPort"]
                .as_u64(),
            other => other.as_u64(),
        };
        u16::try_from(n.expect("a port number")).expect("a port")
    }
}

/// Every pod of the rendered workloads, each with its own loopback address, and the names that
/// resolve to them (pods by their headless Service, ClusterIP Services to their first pod).
fn plan(r: &Rendered) -> (Vec<Pod>, Vec<(String, Ipv4Addr)>) {
    let mut pods = Vec::new();
    let mut next = 2u8;
    for w in r.workloads() {
        let name = name_of(w);
        let replicas = w["spec"]["replicas"].as_u64().unwrap_or_else(|| {
            r.of_kind("HorizontalPodAutoscaler")
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == name.as_str())
                .and_then(|h| h["spec"]["minReplicas"].as_u64())
                .unwrap_or(1)
        });
        let start = w["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
        for i in 0..replicas {
            let ordinal = usize::try_from(start + i).expect("ordinal");
            pods.push(Pod::of(r, w, ordinal, Ipv4Addr::new(127, 0, 0, next)));
            next += 1;
        }
    }
    let mut hosts: Vec<(String, Ipv4Addr)> = pods
        .iter()
        .filter_map(|p| p.dns.clone().map(|d| (d, p.ip)))
        .collect();
    for svc in r.of_kind("Service") {
        if svc["spec"]["clusterIP"] == "None" {
            continue;
        }
        let selector = svc["spec"]["selector"].as_object().expect("selector");
        let first = pods
            .iter()
            .find(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k).map(String::as_str) == v.as_str())
            })
            .unwrap_or_else(|| panic!("Service {} selects no pod", name_of(svc)));
        hosts.push((
            format!("{}.{NAMESPACE}.svc.{DOMAIN}", name_of(svc)),
            first.ip,
        ));
    }
    (pods, hosts)
}

#[test]
fn given_the_ha_values_when_started_as_rendered_should_serve_fail_over_and_survive_a_controller_loss()
 {
    let Some(helm) = helm() else { return };
    // The one value this test adds: 4 MiB commitlog segments (instead of 1 GiB), so that nine
    // stores fit the test machine's disk; it travels the same `config:` path as any setting.
    let r = render(
        &helm,
        Some("values-ha.yaml"),
        &["brokers.config.broker.segment_size=4MiB"],
    )
    .expect("renders");
    let (pods, hosts) = plan(&r);
    match std::env::var_os(INNER_ENV) {
        None => reexec_with_hosts(&hosts),
        Some(_) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run_cluster(&r, pods, hosts));
        }
    }
}

/// Runs this test again in a private mount namespace whose `/etc/hosts` maps the cluster names.
fn reexec_with_hosts(hosts: &[(String, Ipv4Addr)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, ip) in hosts {
        text.push_str(&format!("{ip} {name}\n"));
    }
    std::fs::write(&file, text).expect("write hosts");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(&file)
        .arg(std::env::current_exe().expect("test binary"))
        .args([CLUSTER_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, &file);
    // The inner run's output is shown only when it fails (its own "test result" line must not
    // count as a second test).
    let out = cmd.output().expect(
        "unshare runs (util-linux); the rendered-cluster test needs a private mount namespace",
    );
    let tail = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(120)..].join("\n")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let panic: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .take(12)
        .collect();
    assert!(
        out.status.success(),
        "the rendered-cluster test failed ({}):\n{}\n---- stderr (end) ----\n{}",
        out.status,
        panic.join("\n"),
        tail(&out.stderr)
    );
}

/// The built `comet` binary (target/<profile>/comet, built by `cargo test --workspace` for the
/// comet crate's own tests), or `COMET_BIN`.
fn comet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COMET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("comet");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p comet` (or set COMET_BIN)",
        bin.display()
    );
    bin
}

/// A started pod: its process, killed when dropped.
struct Running {
    pod: Pod,
    child: Option<Child>,
    /// Container path -> directory of the test (the pod's volumes).
    mounts: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

impl Drop for Running {
    /// Kills the process; when the test is failing, shows the end of the pod's log first.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            eprintln!(
                "---- log of pod {} (last lines) ----\n{tail}",
                self.pod.name
            );
        }
    }
}

impl Running {
    /// Maps container paths under a mount to the test's directories, in one pass: a path
    /// starts at the beginning of `s`, or after a quote, `=` or whitespace.
    fn host_path(&self, s: &str) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < s.len() {
            let at_start = i == 0
                || s[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c == '"' || c == '=' || c.is_whitespace());
            let hit = at_start
                .then(|| {
                    self.mounts
                        .iter()
                        .filter(|(path, _)| s[i..].starts_with(path.as_str()))
                        .max_by_key(|(path, _)| path.len())
                })
                .flatten();
            match hit {
                Some((path, dir)) => {
                    out.push_str(&dir.to_string_lossy());
                    i += path.len();
                }
                None => {
                    let c = s[i..].chars().next().expect("in bounds");
                    out.push(c);
                    i += c.len_utf8();
                }
            }
        }
        out
    }

    /// The pod's process environment (nothing of the test's own).
    fn command(&self, args: &[String]) -> Command {
        assert_eq!(
            self.pod.command,
            vec!["/usr/local/bin/comet".to_owned()],
            "{}: the image's binary",
            self.pod.name
        );
        let mut cmd = Command::new(comet_bin());
        cmd.args(args.iter().map(|a| self.host_path(a)))
            .env_clear()
            .current_dir(&self.dir);
        for k in &self.pod.env_order {
            cmd.env(k, self.host_path(&self.pod.env[k]));
        }
        cmd
    }

    /// `kubectl exec <pod> -- comet <args>`: its stdout as JSON.
    fn exec(&self, args: &[&str]) -> Result<Value, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = self
            .command(&args)
            .output()
            .expect("comet admin command runs");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    }

    fn kill(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().expect("SIGKILL");
        c.wait().expect("reaped");
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// The kubelet's readiness probe, once.
    async fn ready(&self) -> bool {
        let probe = &self.pod.container["readinessProbe"];
        if probe["tcpSocket"].is_object() {
            let port = self.pod.port(&probe["tcpSocket"]["port"]);
            tokio::net::TcpStream::connect((self.pod.ip, port))
                .await
                .is_ok()
        } else {
            let port = self.pod.port(&probe["grpc"]["port"]);
            let service = probe["grpc"]["service"].as_str().unwrap_or("").to_owned();
            let Ok(channel) =
                tonic::transport::Endpoint::from_shared(format!("http://{}:{port}", self.pod.ip))
                    .expect("a valid URI")
                    .connect()
                    .await
            else {
                return false;
            };
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            c.check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .is_ok_and(|r| {
                    r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                })
        }
    }
}

/// Mounts the pod's volumes (ConfigMap files, empty directories for the rest) and starts it.
fn start(r: &Rendered, pod: Pod, root: &Path) -> Running {
    let dir = root.join(&pod.name);
    std::fs::create_dir_all(&dir).expect("pod dir");
    let mut mounts = Vec::new();
    let mut configmaps = Vec::new();
    for m in pod.container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
    {
        let vol_name = str_of(&m["name"]);
        let host = dir.join(format!("vol-{vol_name}"));
        std::fs::create_dir_all(&host).expect("volume dir");
        if let Some(v) = pod.volumes.iter().find(|v| v["name"] == vol_name.as_str())
            && let Some(cm) = v["configMap"]["name"].as_str()
        {
            configmaps.push((cm.to_owned(), host.clone()));
        }
        mounts.push((str_of(&m["mountPath"]), host));
    }
    let mut running = Running {
        pod,
        child: None,
        mounts,
        dir: dir.clone(),
    };
    for (cm, host) in configmaps {
        let data = r.get("ConfigMap", &cm)["data"]
            .as_object()
            .expect("ConfigMap data")
            .clone();
        for (file, text) in data {
            let text = running.host_path(&str_of(&text));
            std::fs::write(host.join(file), text).expect("write ConfigMap file");
        }
    }
    let log = std::fs::File::create(dir.join("log")).expect("log file");
    let child = running
        .command(&running.pod.args.clone())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("comet starts");
    running.child = Some(child);
    running
}

/// The broker rows of `comet cluster brokers`, by (set, id).
fn brokers(ctl: &Running) -> Option<Vec<Value>> {
    ctl.exec(&["cluster", "brokers"])
        .ok()
        .and_then(|v| v["brokers"].as_array().cloned())
}

fn master_of(rows: &[Value], set: &str) -> Option<(u64, u64, String)> {
    rows.iter()
        .find(|b| b["broker_set"] == set && b["role"] == "master" && b["alive"] == true)
        .map(|b| {
            (
                b["broker_id"].as_u64().expect("id"),
                b["master_epoch"].as_u64().expect("epoch"),
                str_of(&b["address"]),
            )
        })
}

async fn run_cluster(r: &Rendered, pods: Vec<Pod>, hosts: Vec<(String, Ipv4Addr)>) {
    // The mount namespace maps every name as planned.
    for (name, ip) in &hosts {
        let got: Vec<_> = (name.as_str(), 1u16)
            .to_socket_addrs()
            .unwrap_or_else(|e| panic!("{name} does not resolve: {e}"))
            .collect();
        assert!(
            got.iter().any(|a| a.ip() == *ip),
            "{name} -> {got:?}, not {ip}"
        );
    }
    // The pods' volumes: a fresh tmpfs when there is one (like a PVC, a filesystem of their
    // own, not the shared disk's fill level that the brokers' disk watermarks watch).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let mut running: Vec<Running> = pods.into_iter().map(|p| start(r, p, dir.path())).collect();
    let count = |w: &str| running.iter().filter(|p| p.pod.workload == w).count();
    assert_eq!(count("comet-controller"), 3);
    assert_eq!(count("comet-broker-a"), 3);
    assert_eq!(count("comet-broker-b"), 3);
    assert_eq!(count("comet-proxy"), 2);
    for p in &running {
        wait_until(
            &format!("{} ready", p.pod.name),
            Duration::from_secs(90),
            async || p.ready().await,
        )
        .await;
    }
    // Prometheus reaches every pod's metrics port (the scrape annotations name it), whose
    // /readyz agrees with the probes; the controllers serve the console on theirs.
    for p in &running {
        let port = p.pod.port(&Value::from("metrics"));
        assert_eq!(
            p.pod.annotations["prometheus.io/port"],
            port.to_string(),
            "{}",
            p.pod.name
        );
        let at = SocketAddr::from((p.pod.ip, port));
        let (code, body) = comet_tests::http::get(at, "/readyz").await;
        assert_eq!(code, 200, "{} /readyz: {body}", p.pod.name);
        let (code, body) = comet_tests::http::get(at, "/metrics").await;
        assert_eq!(code, 200, "{} /metrics", p.pod.name);
        assert!(body.contains("# TYPE"), "{} /metrics: {body}", p.pod.name);
        if p.pod.workload == "comet-controller" {
            let at = SocketAddr::from((p.pod.ip, p.pod.port(&Value::from("console"))));
            let (code, body) = comet_tests::http::get(at, "/api/overview").await;
            assert_eq!(code, 200, "{} console: {body}", p.pod.name);
        }
    }
    let ctl = |running: &[Running]| -> usize {
        running
            .iter()
            .position(|p| p.pod.workload == "comet-controller" && p.alive())
            .expect("a live controller")
    };
    // Every member of both sets registered, a master elected, all in sync.
    let c = ctl(&running);
    wait_until(
        "both broker sets elected a master, all members in sync",
        Duration::from_secs(60),
        async || {
            brokers(&running[c]).is_some_and(|rows| {
                rows.len() == 6
                    && rows
                        .iter()
                        .all(|b| b["alive"] == true && b["in_sync"] == true)
                    && master_of(&rows, "broker-a").is_some()
                    && master_of(&rows, "broker-b").is_some()
            })
        },
    )
    .await;
    // NOTES.txt step 2, as `kubectl exec comet-controller-1 -- comet topic create ...`.
    let created = running[c]
        .exec(&["topic", "create", "orders", "--queues", "4"])
        .unwrap_or_else(|e| panic!("topic create: {e}"));
    assert_eq!(created["name"], "orders", "{created}");
    let access = section(&r.config("comet-proxy"), "proxy")["advertised_endpoint"]
        .as_str()
        .expect("advertised endpoint")
        .to_owned();
    // Every proxy routes the topic to its Service name, on both sets.
    for p in running.iter().filter(|p| p.pod.workload == "comet-proxy") {
        let url = format!("http://{}:{}", p.pod.ip, p.pod.port(&Value::from("grpc")));
        wait_until(
            &format!("{} routes orders", p.pod.name),
            Duration::from_secs(20),
            async || {
                let Ok(mut v2) =
                    pb::messaging_service_client::MessagingServiceClient::connect(url.clone())
                        .await
                else {
                    return false;
                };
                let Ok(route) = v2
                    .query_route(raw::request(
                        "helm-test@1",
                        pb::QueryRouteRequest {
                            topic: raw::resource("orders"),
                            endpoints: None,
                        },
                    ))
                    .await
                else {
                    return false;
                };
                let queues = route.into_inner().message_queues;
                let sets: BTreeSet<String> = queues
                    .iter()
                    .filter_map(|q| q.broker.as_ref().map(|b| b.name.clone()))
                    .collect();
                for q in &queues {
                    let endpoints = q
                        .broker
                        .as_ref()
                        .and_then(|b| b.endpoints.as_ref())
                        .expect("endpoints");
                    let a = &endpoints.addresses[0];
                    assert_eq!(
                        format!("{}:{}", a.host, a.port),
                        access,
                        "routes give the Service name"
                    );
                }
                sets.len() == 2
            },
        )
        .await;
    }

    let producer = client::producer(&access, "orders").await;
    let consumer = client::consumer(&access, "helm-test", "orders").await;
    let filter = client::tag("*");
    let round = async |what: &str, first: usize| {
        let keys: BTreeSet<String> = (first..first + 10).map(|i| format!("k{i}")).collect();
        for key in &keys {
            // Right after a failover a send may meet the old master, or a master whose lease
            // lapsed while the controllers elected a leader (HA_NOT_AVAILABLE, retryable): the
            // client retries after a backoff, as applications do, for at most 30 s.
            let started = tokio::time::Instant::now();
            let deadline = started + Duration::from_secs(30);
            let mut failures = 0;
            loop {
                match producer.send(message(key)).await {
                    Ok(receipt) => {
                        assert!(!receipt.message_id().is_empty());
                        if failures > 0 {
                            eprintln!(
                                "{what}: send {key} failed {failures} time(s) over {:?} first",
                                started.elapsed()
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "{what}: send {key} keeps failing: {e:?}"
                        );
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !keys.is_subset(&seen) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: received {} of 10",
                seen.len()
            );
            let Ok(got) = consumer
                .receive_with("orders", &filter, 32, Duration::from_secs(30))
                .await
            else {
                continue;
            };
            for m in got {
                seen.extend(m.keys().iter().cloned());
                let _ = consumer.ack(&m).await;
            }
        }
    };
    round("before any failure", 0).await;

    // A broker master dies: its set elects another member; sends and receives go on.
    let rows = brokers(&running[c]).expect("brokers");
    let (old_id, old_epoch, old_addr) = master_of(&rows, "broker-a").expect("master of broker-a");
    let victim = running
        .iter()
        .position(|p| {
            p.pod.workload == "comet-broker-a" && old_addr.starts_with(&format!("{}.", p.pod.name))
        })
        .unwrap_or_else(|| panic!("no pod advertises {old_addr}"));
    running[victim].kill();
    let c = ctl(&running);
    let failover = wait_until(
        "broker-a elected a new master",
        Duration::from_secs(30),
        async || {
            brokers(&running[c])
                .and_then(|rows| master_of(&rows, "broker-a"))
                .is_some_and(|(id, epoch, _)| id != old_id && epoch > old_epoch)
        },
    )
    .await;
    eprintln!("broker-a failed over in {failover:?}");
    round("after the master of broker-a was killed", 10).await;

    // The Raft leader dies: another controller leads; metadata writes and traffic go on.
    let members = running[c]
        .exec(&["cluster", "members"])
        .expect("cluster members");
    let leader = members["leader_id"].as_u64().expect("a leader");
    let leader_pod = running
        .iter()
        .position(|p| p.pod.name == format!("comet-controller-{leader}"))
        .expect("the leader's pod (pod ordinal = node id)");
    running[leader_pod].kill();
    let c = ctl(&running);
    wait_until(
        "a new controller leader",
        Duration::from_secs(30),
        async || {
            running[c]
                .exec(&["cluster", "members"])
                .ok()
                .and_then(|m| m["leader_id"].as_u64())
                .is_some_and(|l| l != leader)
        },
    )
    .await;
    let created = running[c]
        .exec(&["topic", "create", "after-leader-loss", "--queues", "2"])
        .unwrap_or_else(|e| panic!("topic create after the leader's loss: {e}"));
    assert_eq!(created["name"], "after-leader-loss", "{created}");
    round("after the controller leader was killed", 20).await;

    producer.shutdown().await.expect("producer shutdown");
    drop(consumer);
    drop(running);
}

fn message(key: &str) -> impl rocketmq::model::message::Message {
    MessageBuilder::builder()
        .set_topic("orders")
        .set_tag("helm")
        .set_keys(vec![key.to_owned()])
        .set_body(format!("message {key}").into_bytes())
        .build()
        .expect("message")
}
