"""A small in-process Kubernetes API server that the real kubectl can drive (tests only).

Use
    from tests.apiserver.fixtures import apiserver, apiserver_factory, run_apiserver, events_for
    h = apiserver                     # ApiServerHandle
    h.url, h.kubeconfig(user="alice"), h.audit_log, h.ground_truth, h.clock
    h.kubectl("get", "pods", marker="kubectl+r.ID")   # real kubectl, tmp HOME + KUBECACHEDIR
    h.events()                        # audit log lines (rotated files included), after a flush
    python -m tests.apiserver --port 0 --audit-log PATH --policy FILE --kubeconfig KC   # prints the URL

How kubectl v1.32 is kept happy (found by running it, -v=8):
* HTTPS only.  client-go's clientcmd drops kubeconfig credentials when the
  server is ``http://``, so the server always speaks TLS with a self-signed
  certificate (``cryptography``) whose PEM goes into the kubeconfig as
  certificate-authority-data.
* Discovery: the legacy documents (/api, /api/v1, /apis, /apis/G/V) answered
  as ``application/json``; kubectl asks for aggregated discovery first and
  falls back when the reply is not an APIGroupDiscoveryList.
* OpenAPI: /openapi/v3 (root + one document per group-version containing only
  PATCH operations with their ``fieldValidation``/``fieldManager``/``dryRun``
  query parameters and ``x-kubernetes-group-version-kind``).  That is what
  kubectl's validation checks before leaving validation to the server
  (``fieldValidation=Strict``); without it create/apply fail with "failed to
  download openapi".  No schemas: client-side apply then computes its
  strategic merge patch from the Go types compiled into kubectl; /openapi/v2
  is 404 and ``kubectl explain`` does not work.
* Table: ``Accept: ...;as=Table`` is answered with a meta.k8s.io/v1 Table
  (Name, a few kind-specific columns, Age; rows carry PartialObjectMetadata).
* Protobuf: typed clients (create deployment/configmap/secret/namespace, run,
  expose, auth whoami/can-i) POST ``application/vnd.kubernetes.protobuf``;
  protobuf.py decodes those kinds.  Responses are always JSON.
* Watch: ``?watch=1`` streams chunked JSON watch events (Table-wrapped when a
  Table was asked for) until timeoutSeconds / watch_max_seconds or until the
  client hangs up; audited with ResponseStarted + ResponseComplete.
  ``kubectl delete`` removes objects at once, so its wait ends with one GET
  (404); ``kubectl wait --for=delete`` exercises list+watch.
"""

from .audit import AuditOptions, FakeClock, OffsetClock, RealClock  # noqa: F401
from .server import ApiServer, ServerOptions  # noqa: F401
