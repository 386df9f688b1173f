"""Resource types the API serves: the built-in kinds, the review kinds and the metrics API.

A ``ResourceType`` (``atoll.api.resourcetype``) is everything the server needs to
route, store, validate, discover and print one group/version/resource.  Built-in
kinds are declared, with their rules, printers and selectable fields, in
``atoll.api.resources``; custom ones get a ``ResourceType`` built from their
CustomResourceDefinition by ``apiserver.crds``.
"""

from __future__ import annotations

from atoll.api.resources import BUILTIN
from atoll.api.resources.core_v1_pods import POD_SUBRESOURCES
from atoll.api.resourcetype import (ALL_VERBS, SCALE, STANDARD_FINALIZERS, STATUS, SUB_VERBS,
                                    ResourceType, Subresource, builtin)

#: Kinds served only as POST-and-answer reviews; never stored.
REVIEWS: tuple[ResourceType, ...] = (
    builtin("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
            False, verbs=("create",)),
    builtin("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
            False, verbs=("create",)),
    builtin("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False,
            verbs=("create",)),
    builtin("authorization.k8s.io", "v1", "LocalSubjectAccessReview",
            "localsubjectaccessreviews", True, verbs=("create",)),
    builtin("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False,
            verbs=("create",)),
    builtin("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False,
            verbs=("create",)),
)

#: The resource metrics API (metrics-server's): read-only, answered from the host agents.
METRICS: tuple[ResourceType, ...] = (
    builtin("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", False, verbs=("get", "list")),
    builtin("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", True, verbs=("get", "list")),
)

#: The namespaces a user works in (OpenShift's project list): read-only, answered from RBAC.
TENANCY: tuple[ResourceType, ...] = (
    builtin("tenancy.atoll.dev", "v1", "Project", "projects", False, verbs=("get", "list")),
)

#: Group preference order in discovery, as upstream lists them.
GROUP_ORDER = (
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io",
    "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io", "metrics.k8s.io",
)

__all__ = ["ALL_VERBS", "BUILTIN", "GROUP_ORDER", "METRICS", "POD_SUBRESOURCES", "REVIEWS", "SCALE",
           "STANDARD_FINALIZERS", "STATUS", "SUB_VERBS", "TENANCY", "ResourceType", "Subresource"]
