"""One typed settings object, built by the CLI and passed down explicitly.

Nothing below ``atoll.cli`` reads the environment or files for configuration;
tests change settings with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    #: TCP port of the HTTPS API (kube-apiserver's default: 6443)
    port: int = 6443
    bind_address: str = "0.0.0.0"
    #: "sqlite://<path>" (default: <data_dir>/state.db) or "etcd://host:port,..."
    datastore: str = ""
    #: answer requests without credentials as system:anonymous (off: 401)
    anonymous: bool = False
    #: extra names/addresses for the serving certificate
    extra_sans: tuple[str, ...] = ()
    #: static bearer tokens, kube's --token-auth-file format
    token_file: Path | None = None
    #: events kept for watches that resume from a resourceVersion (kube keeps ~5 minutes)
    watch_window_events: int = 50_000
    watch_window_seconds: float = 300.0
    #: store history kept for paginated lists and store-level watches, in revisions
    history_revisions: int = 100_000
    #: pods tolerate a not-ready or unreachable node this long before eviction (upstream: 300)
    pod_toleration_seconds: int = 3
    #: the content library refuses blobs larger than this (413)
    content_max_blob_bytes: int = 64 << 30
    #: Pod Security level for namespaces without the enforce label: privileged|baseline|restricted
    pod_security_default: str = "baseline"
    #: the RuntimeClass pods get in every namespace but the system ones when they name none and
    #: their namespace has no ``atoll.dev/default-runtime-class`` label ("": none; e.g.
    #: ``atoll-vm``: every tenant pod a pod-VM, as on the Supervisor)
    default_runtime_class: str = ""
    #: shared secret of the servers over one datastore: the first seals the CA and signing
    #: key into the store with it, the others take them from there (apiserver/join.py)
    join_token: str = ""
    #: TLS towards etcd (etcds://): CA bundle, client certificate and key
    etcd_cafile: Path | None = None
    etcd_certfile: Path | None = None
    etcd_keyfile: Path | None = None
    #: where every mutating request is recorded (audit.k8s.io Events, one JSON per line);
    #: None: <data_dir>/audit.log
    audit_log: Path | None = None
    #: ServiceAccount tokens (kube's --service-account-issuer, --api-audiences, ...): the
    #: first issuer signs, all are accepted; audiences default to the issuers
    service_account_issuers: tuple[str, ...] = ("https://kubernetes.default.svc.cluster.local",)
    api_audiences: tuple[str, ...] = ()
    #: TokenRequests for longer are shortened to this (0: no cap)
    service_account_max_token_expiration: int = 0
    #: kubelet's one-hour pod tokens stay valid for a year, as upstream's default
    service_account_extend_token_expiration: bool = True
    service_account_jwks_uri: str = ""
    #: Services' cluster IPs come from this range (kube's --service-cluster-ip-range): its
    #: first address is default/kubernetes's, its tenth kube-system/kube-dns's
    service_cluster_ip_range: str = "10.96.0.0/12"
    #: NodePorts come from this inclusive range (kube's --service-node-port-range)
    service_node_port_range: tuple[int, int] = (30000, 32767)


@dataclass(frozen=True)
class ReconcileSettings:
    """How the controller framework retries (client-go's default controller rate limiter)."""

    #: seconds before a failed key is retried, doubling per failure of that key: short, since
    #: most failures are conflicts that the next read resolves
    backoff_base_seconds: float = 0.05
    #: seconds a persistently failing key waits at most: long enough not to load the server,
    #: short enough that a fixed cause is noticed within a minute
    backoff_max_seconds: float = 30.0
    #: retries per second across all keys of one controller, and how many may burst at once:
    #: a storm of failures (an unreachable server) cannot turn into a storm of requests
    retry_qps: float = 10.0
    retry_burst: int = 100
    #: seconds between two looks at each HorizontalPodAutoscaler (upstream's
    #: --horizontal-pod-autoscaler-sync-period), how long a scale-down waits for the highest
    #: recent proposal to age out (--horizontal-pod-autoscaler-downscale-stabilization), and
    #: how far usage may stray from a target before anything changes (its --...-tolerance)
    hpa_sync_period_seconds: float = 15.0
    hpa_downscale_stabilization_seconds: float = 300.0
    hpa_tolerance: float = 0.1


@dataclass(frozen=True)
class ControllerSettings:
    kubeconfig: Path
    #: API server URLs to use instead of the kubeconfig's (comma-separated: fail over in order)
    server: str = ""
    #: worker tasks per controller
    workers: int = 4
    #: retry and back-off of every controller's work queue
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    #: where the manager serves /metrics (plain HTTP, host:port; "" turns it off); taken ports
    #: are logged and skipped, so several managers on one host still start
    metrics_bind_address: str = "127.0.0.1:10257"
    #: act only while holding the kube-system/atoll-controller-manager Lease (several managers
    #: for high availability); off: act at once
    leader_elect: bool = True
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0


@dataclass(frozen=True)
class UpSettings:
    server: ServerSettings
    controllers: bool = True
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSettings:
    """`atoll agent`: one host's Node, its pods, and how they are run and wired."""

    kubeconfig: Path
    name: str
    data_dir: Path
    host_ip: str
    #: API server URL overriding the kubeconfig's (``--server``)
    server: str = ""
    #: container bundles, writable layers and shim state: a tmpfs, like /run/containerd
    #: (containers do not survive a reboot anyway); default /run/atoll/<name>
    run_dir: Path | None = None
    #: the agent's HTTPS API (logs, exec) for the API server; kubelet's port
    port: int = 10250
    pod_cidr: str = "10.88.0.0/16"
    #: every host's pod ranges together: traffic to them is not masqueraded (default: pod_cidr)
    cluster_cidr: str = ""
    #: route other hosts' pod ranges via those hosts (a flat network between hosts)
    pod_routes: bool = True
    bridge: str = "atoll0"
    #: the cluster's DNS domain (kubelet's --cluster-domain): pods search
    #: <ns>.svc.<domain>, svc.<domain> and <domain>, and the agent answers for it
    cluster_domain: str = "cluster.local"
    #: the nameserver ClusterFirst pods get (kubelet's --cluster-dns: kube-dns's cluster
    #: IP); "": this host's own DNS address on the pod bridge
    cluster_dns: str = ""
    runtime: str = "runc"
    cni_bin_dir: str = "/usr/lib/cni"
    lease_interval: float = 2.0
    lease_seconds: int = 8
    #: restart back-off of crashing containers (kubelet: 10 s doubling up to 300 s)
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    #: extra Node labels
    labels: tuple[tuple[str, str], ...] = ()
    #: TrySoft power-off of a VM: seconds to wait for the guest before powering off Hard
    #: (vSphere waits 5 minutes)
    vm_soft_timeout: float = 60.0
    #: a VM silent on its serial console this long after start is reported as not booting
    vm_silent_boot_timeout: float = 120.0
    #: image pulls: (registry, mirror URL) pairs tried in order before the registry itself
    #: (e.g. ("docker.io", "https://mirror.example:5000")); the registry is the fallback
    registry_mirrors: tuple[tuple[str, str], ...] = ()
    #: registries (host[:port]) spoken to over plain http or unverified https, as Docker's
    #: insecure-registries (loopback registries may always use http)
    insecure_registries: tuple[str, ...] = ()
    #: extra CA certificates (PEM) trusted for registries besides the system's
    registry_ca_file: Path | None = None
    #: the node's own registry credentials: a docker config.json (``auths``)
    registry_credentials_file: Path | None = None
    #: seconds a registry may stay silent mid-answer before a pull fails (a stalled blob)
    registry_read_timeout: float = 60.0
    #: decompressed bytes one image layer may unpack to (stops decompression bombs)
    image_max_layer_bytes: int = 16 << 30
    #: image garbage collection (kubelet's --image-gc-high/low-threshold, in percent of the
    #: image filesystem, and --minimum-image-gc-age in seconds)
    image_gc_high_threshold: int = 85
    image_gc_low_threshold: int = 80
    image_gc_min_age: float = 120.0
