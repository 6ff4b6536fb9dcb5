"""Check deploy/kubernetes/: every manifest against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail), the KEDA ScaledObject
and the Kustomization against the schemas in schemas/, and what the
manifests promise: every container non-root, read-only root filesystem, no
privilege escalation, seccomp RuntimeDefault, requests and limits, secrets
only by reference. `--self-test` checks that a broken manifest fails.

python deploy/kubernetes/check.py [--self-test]   (make lint-k8s)
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization-kustomize.config.k8s.io-v1beta1.json",
}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_pod(name, pod, problems):
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        where = f"{name}/{container.get('name')}"
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities are not all dropped")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in resources.get(part, {}):
                    problems.append(f"{where}: no resources.{part}.{what}")
        for env in container.get("env", []):
            if "value" in env and any(w in env["name"].upper() for w in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
                problems.append(f"{where}: {env['name']} is set inline: take it from a Secret (valueFrom.secretKeyRef)")


def check(directory):
    problems = []
    files = sorted(directory.glob("*.yaml"))
    kustomization = directory / "kustomization.yaml"
    if kustomization.exists():
        listed = set(documents(kustomization)[0].get("resources", []))
        present = {f.name for f in files} - {"kustomization.yaml"}
        for missing in sorted(listed - present):
            problems.append(f"kustomization.yaml lists {missing}, which does not exist")
        for unlisted in sorted(present - listed):
            problems.append(f"{unlisted} is not in kustomization.yaml")
    core = []
    for path in files:
        for doc in documents(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path.name}: {key[1]} {doc.get('metadata', {}).get('name')}"
            if key in CUSTOM:
                schema = json.loads((HERE / "schemas" / CUSTOM[key]).read_text())
                for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                    at = "/".join(str(p) for p in error.absolute_path)
                    problems.append(f"{name}: {at}: {error.message}")
            else:
                core.append(path)
            if key[1] in POD_KINDS:
                check_pod(name, doc["spec"]["template"]["spec"], problems)
    core = sorted(set(core))
    if core:
        validator = pathlib.Path(sys.executable).parent / "kubernetes-validate"
        run = subprocess.run(
            [str(validator), "--strict", "--quiet", *map(str, core)],
            capture_output=True,
            text=True,
        )
        # Kinds with no bundled schema are warnings there: here they fail.
        for line in (run.stdout + run.stderr).splitlines():
            if line.strip() and not line.startswith("INFO"):
                problems.append(line.strip())
        if run.returncode != 0 and not problems:
            problems.append(f"kubernetes-validate failed ({run.returncode})")
    return problems


def self_test():
    """A manifest with each kind of mistake must fail, mistake by mistake."""
    broken = {
        "unknown field": ("worker.yaml", "        - name: worker\n", "        - name: worker\n          imagePullPolcy: Always\n"),
        "root": ("worker.yaml", "runAsNonRoot: true", "runAsNonRoot: false"),
        "writable root": ("serve.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
        "no limits": ("nats.yaml", "            limits:\n              cpu: \"1\"\n              memory: 1Gi\n", ""),
        "KEDA typo": ("worker-scaler.yaml", "lagThreshold:", "lagTreshold:"),
        "inline key": ("worker.yaml", "          env:\n", "          env:\n            - name: OPENAI_API_KEY\n              value: sk-live\n"),
        "unlisted file": ("extra.yaml", None, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
    }
    failures = []
    for what, (file, old, new) in broken.items():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            for path in HERE.glob("*.yaml"):
                (tmp / path.name).write_text(path.read_text())
            target = tmp / file
            if old is None:
                target.write_text(new)
            else:
                text = target.read_text()
                assert old in text, f"self-test {what}: `{old}` not in {file}"
                target.write_text(text.replace(old, new, 1))
            if not check(tmp):
                failures.append(what)
    return failures


def main():
    problems = check(HERE)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"deploy/kubernetes: {len(problems)} problems", file=sys.stderr)
        return 1
    if "--self-test" in sys.argv:
        missed = self_test()
        if missed:
            print(f"error: the check let these broken manifests pass: {', '.join(missed)}", file=sys.stderr)
            return 1
    print(f"deploy/kubernetes: {len(list(HERE.glob('*.yaml')))} files valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
