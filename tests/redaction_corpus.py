"""Redaction corpus: kubectl command lines with secrets, and look-alikes that must stay as typed.

Data only, shared by the unit tests (tests/test_redact.py) and the end-to-end tests that run each
entry through the real capture paths and scan the stored bytes. Every secret is unique and
distinctive (…-NNNN, NNNN being the case number) so that a byte scan for it means something.

SECRET_CASES:     (argv after `kubectl`, [substrings that must not survive anywhere])
LOOKALIKES:       argv lists that must come back unchanged, with nothing reported masked
SHELL_LINE_CASES: (raw shell history line, [substrings that must not survive mask_text])
"""

from __future__ import annotations

# Shapes recognisable by value alone, built once so that each case reads clearly.
JWT_0060 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYXNlLTAwNjAifQ.c2lnbmF0dXJlLTAwNjA"
JWT_0061 = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYXNlLTAwNjEifQ.c2lnbmF0dXJlLTAwNjE"
JWT_0119 = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJsaW5lLTAxMTkifQ.c2lnbmF0dXJlLTAxMTk"
PEM_BODY_0070 = "MIIEs3cr3tPemBody0070AAAAB3NzaC1yc2EAAAADAQABAAABAQ"
PEM_0070 = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY_0070}\n-----END RSA PRIVATE KEY-----"

SECRET_CASES: list[tuple[list[str], list[str]]] = [
    # global --token / --password, both forms; --username is not a secret
    (["get", "pods", "--token=s3cr3t-tok-0001"], ["s3cr3t-tok-0001"]),
    (["get", "pods", "--token", "s3cr3t-tok-0002"], ["s3cr3t-tok-0002"]),
    (["--username=admin", "--password=s3cr3t-pw-0003", "get", "nodes"], ["s3cr3t-pw-0003"]),
    (["--username", "admin", "--password", "s3cr3t-pw-0004", "get", "nodes"], ["s3cr3t-pw-0004"]),
    # user:pass@ in any URL, token-like query parameters
    (["-s", "https://admin:s3cr3t-url-0005@k8s.example.com:6443", "get", "ns"], ["s3cr3t-url-0005"]),
    (["--server=https://admin:s3cr3t-url-0006@k8s.example.com:6443", "get", "ns"], ["s3cr3t-url-0006"]),
    (["apply", "-f", "https://raw.example.com/app.yaml?token=s3cr3t-qs-0007"], ["s3cr3t-qs-0007"]),
    (["apply", "--filename=https://deploy:s3cr3t-url-0008@git.example.com/app.yaml"], ["s3cr3t-url-0008"]),
    (["get", "--raw", "/api/v1/namespaces?access_token=s3cr3t-qs-0009&limit=5"], ["s3cr3t-qs-0009"]),
    (["get", "--raw=/apis?X-Amz-Date=20261127&X-Amz-Signature=s3cr3t-sig-0010"], ["s3cr3t-sig-0010"]),
    (["apply", "-f", "https://example.com/m.yaml?password=s3cr3t-qs-0011"], ["s3cr3t-qs-0011"]),
    (["apply", "-f", "https://acct.blob.core.windows.net/m/app.yaml?sv=2022-11-02&sig=s3cr3t-sas-0012"],
     ["s3cr3t-sas-0012"]),
    # create secret generic: every --from-literal value, whatever its key; keys kept
    (["create", "secret", "generic", "db", "--from-literal=password=s3cr3t-lit-0013"], ["s3cr3t-lit-0013"]),
    (["create", "secret", "generic", "db", "--from-literal", "username=s3cr3t-lit-0014"], ["s3cr3t-lit-0014"]),
    (["create", "secret", "generic", "app", "--from-literal=api-host=s3cr3t-lit-0015a",
      "--from-literal", "mode=s3cr3t-lit-0015b", "--from-file=./ca.crt"], ["s3cr3t-lit-0015a", "s3cr3t-lit-0015b"]),
    (["-n", "prod", "create", "secret", "generic", "x", "--from-literal=k=s3cr3t-lit-0016=with=equals"],
     ["s3cr3t-lit-0016"]),
    # create secret docker-registry: --docker-password (the user name and e-mail stay)
    (["create", "secret", "docker-registry", "regcred", "--docker-server=registry.example.com",
      "--docker-username=ci", "--docker-password=s3cr3t-dock-0017", "--docker-email=ci@example.com"],
     ["s3cr3t-dock-0017"]),
    (["create", "secret", "docker-registry", "regcred", "--docker-password", "s3cr3t-dock-0018"], ["s3cr3t-dock-0018"]),
    # config set-credentials
    (["config", "set-credentials", "admin", "--token=s3cr3t-cred-0019"], ["s3cr3t-cred-0019"]),
    (["config", "set-credentials", "admin", "--token", "s3cr3t-cred-0020"], ["s3cr3t-cred-0020"]),
    (["config", "set-credentials", "admin", "--username=admin", "--password=s3cr3t-cred-0021"], ["s3cr3t-cred-0021"]),
    (["config", "set-credentials", "admin", "--password", "s3cr3t-cred-0022",
      "--client-key=/home/u/.kube/admin.key"], ["s3cr3t-cred-0022"]),
    (["config", "set-credentials", "oidc", "--auth-provider=oidc", "--auth-provider-arg=client-id=kube",
      "--auth-provider-arg=client-secret=s3cr3t-oidc-0023",
      "--auth-provider-arg=idp-issuer-url=https://idp.example.com"],
     ["s3cr3t-oidc-0023"]),
    (["config", "set-credentials", "oidc", "--auth-provider-arg", "refresh-token=s3cr3t-oidc-0024a",
      "--auth-provider-arg", "id-token=s3cr3t-oidc-0024b"], ["s3cr3t-oidc-0024a", "s3cr3t-oidc-0024b"]),
    (["config", "set-credentials", "eks", "--exec-command=aws", "--exec-env=AWS_PROFILE=s3cr3t-env-0025",
      "--exec-arg=eks"], ["s3cr3t-env-0025"]),
    (["config", "set-credentials", "vault", "--exec-env", "VAULT_ADDR=s3cr3t-env-0026"], ["s3cr3t-env-0026"]),
    (["config", "set-credentials", "cli", "--exec-command=login-helper", "--exec-arg=--token=s3cr3t-arg-0027"],
     ["s3cr3t-arg-0027"]),
    # config set on credential paths: the VALUE positional
    (["config", "set", "users.admin.token", "s3cr3t-cfg-0028"], ["s3cr3t-cfg-0028"]),
    (["config", "set", "users.admin.password", "s3cr3t-cfg-0029"], ["s3cr3t-cfg-0029"]),
    (["config", "set", "users.admin.client-key-data", "s3cr3t-cfg-0030"], ["s3cr3t-cfg-0030"]),
    (["config", "set", "--set-raw-bytes=true", "users.oidc.auth-provider.config.client-secret", "s3cr3t-cfg-0031"],
     ["s3cr3t-cfg-0031"]),
    (["config", "set", "users.oidc.auth-provider.config.id-token", "s3cr3t-cfg-0032"], ["s3cr3t-cfg-0032"]),
    # --env / -e / set env K=V with a secret-looking K (or a generic-shape V)
    (["run", "tmp", "--image=busybox", "--env=DB_PASSWORD=s3cr3t-envf-0033", "--env=LOG_LEVEL=debug"],
     ["s3cr3t-envf-0033"]),
    (["run", "tmp", "--image=busybox", "--env", "API_KEY=s3cr3t-envf-0034"], ["s3cr3t-envf-0034"]),
    (["set", "env", "deploy/web", "DB_PASSWORD=s3cr3t-envp-0035", "LOG_LEVEL=debug"], ["s3cr3t-envp-0035"]),
    (["set", "env", "deploy/web", "-e", "GITHUB_TOKEN=s3cr3t-envp-0036"], ["s3cr3t-envp-0036"]),
    (["set", "env", "deploy/web", "--env=SESSION_SECRET=s3cr3t-envp-0037"], ["s3cr3t-envp-0037"]),
    (["debug", "web", "-it", "--image=busybox", "--env", "AUTH_HEADER=s3cr3t-envp-0038"], ["s3cr3t-envp-0038"]),
    # patch -p / run --overrides carrying Secret data/stringData (document shape and keys kept)
    (["patch", "secret", "db", "-p", '{"data":{"password":"czNjcjN0LXBhdGNoLTAwMzk="}}'],
     ["czNjcjN0LXBhdGNoLTAwMzk="]),
    (["patch", "secret", "db", "--patch", '{"stringData": {"DB_HOST": "s3cr3t-patch-0040"}}'], ["s3cr3t-patch-0040"]),
    (["patch", "secrets/db", "--type=json",
      '-p=[{"op":"replace","path":"/data/token","value":"czNjcjN0LXBhdGNoLTAwNDE="}]'], ["czNjcjN0LXBhdGNoLTAwNDE="]),
    (["patch", "secret", "db", "--patch=stringData:\n  url: s3cr3t-patch-0042\n"], ["s3cr3t-patch-0042"]),
    (["patch", "secret", "db", "-p", '{"data": {"api": "s3cr3t-patch-0043"'], ["s3cr3t-patch-0043"]),
    (["patch", "-f", "db.yaml", "-p", '{"data":{"cfg":"s3cr3t-patch-0044"}}'], ["s3cr3t-patch-0044"]),
    (["patch", "secret", "db", "--type=merge", "-p", "{data: {apikey: s3cr3t-patch-0045}}"], ["s3cr3t-patch-0045"]),
    (["run", "tmp", "--image=busybox", "--overrides",
      '{"apiVersion":"v1","spec":{"containers":[{"name":"tmp","image":"busybox",'
      '"env":[{"name":"DB_PASSWORD","value":"s3cr3t-ovr-0046"}]}]}}'], ["s3cr3t-ovr-0046"]),
    (["run", "tmp", "--image=busybox",
      '--overrides={"kind":"Secret","apiVersion":"v1","stringData":{"seed":"s3cr3t-ovr-0047"}}'], ["s3cr3t-ovr-0047"]),
    # after `--` in exec/run/debug
    (["exec", "-it", "db-0", "--", "mysql", "-uroot", "-ps3cr3t-my-0048"], ["s3cr3t-my-0048"]),
    (["exec", "-it", "db-0", "--", "mysql", "-uroot", "--password=s3cr3t-my-0049"], ["s3cr3t-my-0049"]),
    (["exec", "db-0", "--", "psql", "postgresql://app:s3cr3t-pg-0050@localhost:5432/app"], ["s3cr3t-pg-0050"]),
    (["exec", "web", "--", "curl", "-u", "admin:s3cr3t-curl-0051", "http://localhost:8080/"], ["s3cr3t-curl-0051"]),
    (["exec", "web", "--", "curl", "-H", "Authorization: Bearer s3cr3t-bearer-0052", "http://localhost/"],
     ["s3cr3t-bearer-0052"]),
    (["exec", "cache-0", "--", "redis-cli", "-a", "s3cr3t-redis-0053", "ping"], ["s3cr3t-redis-0053"]),
    (["exec", "web", "--", "env", "FOO_TOKEN=s3cr3t-envx-0054", "printenv"], ["s3cr3t-envx-0054"]),
    (["exec", "db-0", "--", "sh", "-c", "mysql -uroot -ps3cr3t-sh-0055 -e 'select 1'"], ["s3cr3t-sh-0055"]),
    (["run", "tmp", "--rm", "-it", "--image=curlimages/curl", "--", "curl", "--user=ops:s3cr3t-curl-0056",
      "https://api.example.com"], ["s3cr3t-curl-0056"]),
    (["debug", "node/n1", "-it", "--image=busybox", "--", "sh", "-c",
      'curl -H "Authorization: Basic czNjcjN0LWJhc2ljLTAwNTc=" http://x'], ["czNjcjN0LWJhc2ljLTAwNTc="]),
    (["exec", "web", "--", "curl", "-uadmin:s3cr3t-curl-0058", "http://x"], ["s3cr3t-curl-0058"]),
    (["exec", "mongo-0", "--", "mongosh", "-u", "root", "-p", "s3cr3t-mongo-0059"], ["s3cr3t-mongo-0059"]),
    # generic shapes, anywhere in any word
    (["annotate", "pod", "web", f"note={JWT_0060}"], [JWT_0060]),
    (["set", "env", "deploy/web", f"CONFIG={JWT_0061}"], [JWT_0061]),
    (["set", "env", "deploy/uploader", "AWS_ACCESS_KEY_ID=AKIAS3CR3TKEY0062ABC",
      "AWS_SECRET_ACCESS_KEY=s3cr3t-aws-0062"],
     ["AKIAS3CR3TKEY0062ABC", "s3cr3t-aws-0062"]),
    (["annotate", "deploy/x", "creds=ASIAS3CR3TKEY0063XYZ"], ["ASIAS3CR3TKEY0063XYZ"]),
    (["annotate", "deploy/ci", "ci.example.com/pat=ghp_S3cr3tGithubToken0064abcdefghijk"],
     ["ghp_S3cr3tGithubToken0064abcdefghijk"]),
    (["create", "configmap", "ci", "--from-literal=note=github_pat_S3cr3t0065_abcdefghijklmnopqrstuv"],
     ["github_pat_S3cr3t0065_abcdefghijklmnopqrstuv"]),
    (["create", "configmap", "ci", "--from-literal", "gitlab=glpat-S3cr3tGitlab0066xyz"],
     ["glpat-S3cr3tGitlab0066xyz"]),
    (["set", "env", "deploy/bot", "SLACK_HOOK=xoxb-0067-s3cr3t-slack-token"], ["xoxb-0067-s3cr3t-slack-token"]),
    (["create", "configmap", "join", "--from-literal=cmd=kubeadm join 10.0.0.1:6443 --token abc068.s3cr3tboot0068xy"],
     ["abc068.s3cr3tboot0068xy"]),
    (["exec", "cp-0", "--", "kubeadm", "token", "delete", "abc069.s3cr3tboot0069xy"], ["abc069.s3cr3tboot0069xy"]),
    (["create", "configmap", "k", f"--from-literal=bundle={PEM_0070}"], [PEM_BODY_0070]),
    (["create", "configmap", "db", "--from-literal=db_password=s3cr3t-cm-0071"], ["s3cr3t-cm-0071"]),
]

LOOKALIKES: list[list[str]] = [
    # the word "secret" (or token, password, key ...) as a resource, name, label or path
    ["get", "secret", "db", "-o", "yaml"],
    ["describe", "secret", "token-abc"],
    ["get", "secrets", "-n", "keys"],
    ["delete", "secret", "api-key", "regcred", "--ignore-not-found"],
    ["logs", "deploy/password-reset"],
    ["logs", "-p", "web"],
    ["rollout", "restart", "deploy/auth-service"],
    ["get", "serviceaccount", "token-reviewer", "-o", "yaml"],
    ["get", "po", "-l", "app=token-service"],
    ["get", "po", "-l", "secret=true"],
    ["get", "po", "--selector=password-rotation=enabled"],
    ["config", "use-context", "secret-prod"],
    ["exec", "web", "--", "ls", "/etc/secrets"],
    ["exec", "web", "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
    ["get", "--raw", "/api/v1/namespaces/default/secrets?limit=5"],
    ["get", "secrets", "--field-selector", "type=kubernetes.io/service-account-token"],
    ["auth", "can-i", "get", "secrets", "--as=system:serviceaccount:ci:deployer"],
    ["label", "secret", "db", "rotated=2026-11-27"],
    ["annotate", "secret", "db", "kubernetes.io/service-account.name=ci"],
    # reading Secret data is not typing it
    ["get", "secret", "db", "-o", "jsonpath={.data.password}"],
    ["get", "secret", "db", "-o", "go-template={{.data.token | base64decode}}"],
    ["get", "pods", "-o", "custom-columns=NAME:.metadata.name,TOKEN:.spec.serviceAccountName"],
    # flags near the secret ones: files, paths, user names, unknown flags
    ["get", "po", "--token-file=/var/run/token"],
    ["get", "po", "--token-file", "/var/run/token"],
    ["create", "secret", "generic", "x", "--from-file=./key.pem"],
    ["create", "secret", "generic", "ssh", "--from-file=ssh-privatekey=/home/u/.ssh/id_ed25519"],
    ["create", "secret", "generic", "creds", "--from-env-file=.env"],
    ["create", "secret", "tls", "web-tls", "--cert=tls.crt", "--key=tls.key"],
    ["config", "set-credentials", "admin", "--client-key=/home/u/admin.key", "--client-certificate=/home/u/admin.crt",
     "--username=admin"],
    ["config", "set-credentials", "oidc", "--auth-provider=oidc", "--auth-provider-arg=client-id=kubernetes",
     "--auth-provider-arg", "idp-issuer-url=https://idp.example.com"],
    ["config", "set-credentials", "cluster-admin", "--exec-env=var-to-remove-"],
    ["config", "set", "users.admin.username", "admin"],
    ["config", "set", "clusters.prod.server", "https://prod.example.com:6443"],
    ["-s", "https://k8s.example.com:6443", "--username", "admin", "get", "ns"],
    ["create", "token", "ci-bot", "--duration=1h"],
    # harmless settings, documents and commands
    ["set", "env", "deploy/web", "LOG_LEVEL=debug"],
    ["set", "env", "deploy/web", "--from=secret/db-creds", "--prefix=DB_"],
    ["set", "env", "deploy/web", "--keys=password,token", "--from=secret/db"],
    ["debug", "-it", "web", "--image=busybox", "--env=PASSWORD_FILE=/run/secrets/pw"],
    ["run", "tmp", "--image=busybox", "--env=LOG_LEVEL=debug", "--", "sleep", "3600"],
    ["create", "configmap", "x", "--from-literal=mode=fast"],
    ["patch", "configmap", "app", "-p", '{"data":{"mode":"fast"}}'],
    ["patch", "deploy", "web", "-p",
     '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"LOG_LEVEL","value":"debug"}]}]}}}}'],
    ["exec", "db-0", "--", "mysql", "-uroot", "-p"],
    ["exec", "web", "--", "curl", "-u", "admin", "http://localhost/"],
    ["apply", "-f", "https://example.com/manifest.yaml"],
    ["apply", "-f", "https://example.com/manifest.yaml?ref=main&path=deploy"],
    ["port-forward", "svc/keycloak", "8443:443"],
    # values that resemble a shape without being one
    ["get", "configmap", "dGVzdC1jb25maWctbWFw"],
    ["get", "node", "abcdef.0123456789abcde"],
    ["describe", "node", "ip-10-0-0-1.ec2.internal"],
    ["get", "configmap", "eyJ-config"],
]

SHELL_LINE_CASES: list[tuple[str, list[str]]] = [
    ("PGPASSWORD=hunter2x-0101 kubectl exec db -- psql -U app", ["hunter2x-0101"]),
    ("KUBECONFIG=/tmp/kc GITHUB_TOKEN=s3cr3t-line-0102 kubectl apply -f deploy.yaml", ["s3cr3t-line-0102"]),
    ("DATABASE_URL=postgres://app:s3cr3t-line-0103@db:5432/app kubectl get po", ["s3cr3t-line-0103"]),
    ("kubectl --token=s3cr3t-line-0104 get pods | grep web", ["s3cr3t-line-0104"]),
    ("kubectl create secret generic db --from-literal=password='s3cr3t line 0105'", ["s3cr3t line 0105"]),
    ('k -n prod exec -it db-0 -- sh -c "mysql -uroot -ps3cr3t-line-0106"', ["s3cr3t-line-0106"]),
    ("watch kubectl --password s3cr3t-line-0107 get nodes", ["s3cr3t-line-0107"]),
    ("sudo -E kubectl config set-credentials ci --token s3cr3t-line-0108", ["s3cr3t-line-0108"]),
    ("kubectl apply -f - <<EOF\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n"
     "  DB_URL: s3cr3t-line-0109\n  tls.key: |\n    s3cr3t-line-0109b\nEOF", ["s3cr3t-line-0109", "s3cr3t-line-0109b"]),
    ('kubectl patch secret db -p "{\\"data\\":{\\"password\\":\\"czNjcjN0LWxpbmUtMDExMA==\\"}}"',
     ["czNjcjN0LWxpbmUtMDExMA=="]),
    ("curl -u admin:s3cr3t-line-0111 https://example.com && kubectl get po", ["s3cr3t-line-0111"]),
    ("export AWS_SECRET_ACCESS_KEY=s3cr3t-line-0112; kubectl get po", ["s3cr3t-line-0112"]),
    ("aws_secret_access_key = s3cr3t-line-0113", ["s3cr3t-line-0113"]),
    ("kubectl exec vault-0 -- env VAULT_TOKEN=s3cr3t-line-0114 vault status", ["s3cr3t-line-0114"]),
    ("kubectl get --raw '/api/v1/pods?token=s3cr3t-line-0115'", ["s3cr3t-line-0115"]),
    ('kubectl run tmp --image=busybox --env="DB_PASSWORD=s3cr3t-line-0116" -- sleep 1', ["s3cr3t-line-0116"]),
    ("kubectl get po --token s3cr3t-line-0117 'cut off here", ["s3cr3t-line-0117"]),
    ("git clone https://bot:s3cr3t-line-0118@git.example.com/ops.git && kubectl apply -k ops", ["s3cr3t-line-0118"]),
    (f"kubectl get pods --token {JWT_0119}  # the CI token", [JWT_0119]),
    ("minikube kubectl -- create secret generic x --from-literal=k=s3cr3t-line-0120", ["s3cr3t-line-0120"]),
    ("kubectl record -- create secret generic x --from-literal=k=s3cr3t-line-0121", ["s3cr3t-line-0121"]),
    ("kubectl-record -- --token=s3cr3t-line-0122 get po", ["s3cr3t-line-0122"]),
    ("Authorization: Bearer s3cr3t-line-0123", ["s3cr3t-line-0123"]),
    ("kubectl config set users.admin.token s3cr3t-line-0124 && kubectl config use-context prod", ["s3cr3t-line-0124"]),
    ("kubectl exec -it db-0 -- bash -lc 'redis-cli -a s3cr3t-line-0125 info'", ["s3cr3t-line-0125"]),
    ("for ns in a b; do kubectl -n $ns create secret generic x --from-literal=pw=s3cr3t-line-0126; done",
     ["s3cr3t-line-0126"]),
]
