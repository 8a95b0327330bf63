"""The AWX / Automation Platform side, for real where it can be without a container engine:

- ``ansible-builder create`` on the real execution-environment.yml, with the collection tarball that
  ``ansible-galaxy collection build`` makes from this checkout: the build context holds the collection
  (small: no tests, molecule, benchmarks), its pinned Python requirements and bindep.txt;
- ansible-builder's introspection of the installed collection finds the same dependencies (so any
  EE that lists nodekeep.backup gets them);
- awx/job_templates.yml: every template runs a playbook of the collection, the restore template has
  a survey (node, epoch, cutover yes/no), survey variables are ones the playbooks read, credentials
  are AWX credentials by name (no secret in the file), and awx/configure.yml applies all of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL = "nodekeep-backup-%s.tar.gz" % GALAXY["version"]

pytestmark = pytest.mark.timeout(600)


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip("%s is not installed (run `make setup`)" % name)
    return found


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # without the test's PYTHONPATH / collections path: this checkout must not count as installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANSIBLE_COLLECTIONS_PATH")}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(argv), proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


def pins(text: str) -> list[str]:
    return sorted(line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip())


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """build/ee/TARBALL from this checkout, then `ansible-builder create` on the real definition."""
    galaxy, builder = tool("ansible-galaxy"), tool("ansible-builder")
    run(galaxy, "collection", "build", "--force", "--output-path", str(ROOT / "build" / "ee"), str(ROOT))
    out = tmp_path_factory.mktemp("ee") / "context"
    # --output-filename: without it ansible-builder names the file after the runtime it finds
    # on PATH (Containerfile for podman, Dockerfile for docker or none); AWX builds with podman.
    run(
        builder,
        "create",
        "-f",
        str(ROOT / "execution-environment.yml"),
        "--context",
        str(out),
        "--output-filename",
        "Containerfile",
        "-v",
        "2",
    )
    return out


class TestExecutionEnvironment:
    def test_the_context_holds_the_collection_tarball(self, context):
        definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
        assert definition["version"] == 3
        tarball = context / "_build" / "collections" / TARBALL
        assert tarball.is_file(), sorted(str(p.relative_to(context)) for p in context.rglob("*"))
        # the definition installs exactly this file (galaxy requirements point at where it is copied)
        requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
        assert requirements["collections"] == [{"name": "/tmp/nodekeep-collections/" + TARBALL, "type": "file"}]
        containerfile = (context / "Containerfile").read_text()
        assert "COPY _build/collections/ /tmp/nodekeep-collections/" in containerfile
        assert "ansible-galaxy collection install" in containerfile
        assert "introspect" in containerfile and "install-from-bindep" in containerfile
        assert "ansible-doc -t module nodekeep.backup.epoch_backup" in containerfile

    def test_the_tarball_holds_what_awx_runs_and_nothing_else(self, context):
        tarball = context / "_build" / "collections" / TARBALL
        assert tarball.stat().st_size < 1 << 20, "the collection tarball grew past 1 MiB: check build_ignore"
        with tarfile.open(tarball) as archive:
            names = set(archive.getnames())
            manifest = json.loads(archive.extractfile("MANIFEST.json").read())
        assert manifest["collection_info"]["namespace"] == "nodekeep"
        assert manifest["collection_info"]["version"] == GALAXY["version"]
        wanted = ["meta/runtime.yml", "meta/execution-environment.yml", "requirements/node.txt", "bindep.txt",
                  "requirements/collection.txt",
                  "roles/schedule/files/nodekeep_bundle.py", "plugins/module_utils/ops/runner.py"]  # fmt: skip
        wanted += ["plugins/modules/%s" % p.name for p in (ROOT / "plugins" / "modules").glob("*.py")]
        wanted += ["playbooks/%s" % p.name for p in (ROOT / "playbooks").glob("*.yml")]
        wanted += ["roles/%s/tasks/main.yml" % p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir()]
        assert sorted(set(wanted) - names) == []
        top = {name.split("/")[0] for name in names}
        assert not top & {"tests", "molecule", "benchmarks", "awx", ".venv", ".cache", "build", ".git"}, top
        assert not [n for n in names if n.endswith((".pyc", ".pub")) or "__pycache__" in n or ".ruff_cache" in n]

    def test_the_context_holds_the_pinned_python_requirements_and_bindep(self, context):
        node = (ROOT / "requirements" / "node.txt").read_text()
        assert pins((context / "_build" / "requirements.txt").read_text()) == pins(node)
        assert all("==" in line for line in pins(node)), "node.txt must pin exactly"
        assert (context / "_build" / "bindep.txt").read_text() == (ROOT / "bindep.txt").read_text()
        containerfile = (context / "Containerfile").read_text()
        core = re.search(r"^ansible-core==(\S+)", (ROOT / "requirements" / "constraints.txt").read_text(), re.MULTILINE)
        assert 'ANSIBLE_INSTALL_REFS="ansible-core==%s ' % core.group(1) in containerfile, (
            "the EE must run the ansible-core the tests run (requirements/constraints.txt)"
        )

    def test_introspection_of_the_installed_collection_finds_its_dependencies(self, context, tmp_path):
        run(tool("ansible-galaxy"), "collection", "install", "--force", "-p", str(tmp_path / "collections"),
            str(context / "_build" / "collections" / TARBALL))  # fmt: skip
        proc = run(tool("ansible-builder"), "introspect", "--sanitize", str(tmp_path / "collections"))
        found = yaml.safe_load(proc.stdout.split("---", 1)[1])
        python = sorted(line.split("#")[0].strip() for line in found["python"])
        assert python == pins((ROOT / "requirements" / "collection.txt").read_text())
        system = sorted(line.split("#")[0].strip() for line in found["system"])
        assert system == pins((ROOT / "bindep.txt").read_text())

    def test_introspection_gets_ranges_that_hold_the_tested_pins(self):
        """Exact pins of transitive packages make an EE with other collections unresolvable: the
        collection declares ranges of its direct dependencies, each holding the version node.txt pins."""
        from packaging.requirements import Requirement

        meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
        declared = [Requirement(line) for line in pins((ROOT / meta["dependencies"]["python"]).read_text())]
        locked = {}
        for line in pins((ROOT / "requirements" / "node.txt").read_text()):
            req = Requirement(line)
            locked[req.name] = next(iter(req.specifier)).version
        assert declared, "no Python requirements declared for introspection"
        for req in declared:
            assert req.name in locked, "%s is not a dependency node.txt locks" % req.name
            assert not [s for s in req.specifier if s.operator in ("==", "===")], "%s is pinned exactly" % req
            assert req.specifier.contains(locked[req.name]), "%s does not hold the tested %s" % (req, locked[req.name])
            assert any(s.operator == "<" for s in req.specifier), "%s has no upper bound" % req
        direct = {"apsw", "boto3", "cryptography", "pyrage", "rocksdict", "shamir-mnemonic", "zstandard"}
        assert {req.name for req in declared} == direct, "only the direct dependencies, no transitive pins"

    def test_the_ee_has_the_age_cli_on_its_rpm_base_too(self, context):
        """docs/awx.md promises the age CLI in the EE; its base image is EL 9 (rpm), where age is in EPEL."""
        from bindep.depends import Depends

        depends = Depends((context / "_build" / "bindep.txt").read_text())
        for platform in (["platform:rpm", "platform:redhat", "platform:centos"], ["platform:dpkg", "platform:debian"]):
            wanted = {rule[0] for rule in depends.active_rules(platform)}
            assert {"age", "zstd"} <= wanted, (platform[0], sorted(wanted))
        containerfile = (context / "Containerfile").read_text()
        epel = containerfile.find("install -y epel-release")
        assert epel != -1, "EPEL (which carries age for EL 9) is not enabled"
        assert epel < containerfile.find("install-from-bindep"), "EPEL must be enabled before the bindep packages"
        image = yaml.safe_load((ROOT / "execution-environment.yml").read_text())["images"]["base_image"]["name"]
        assert "centos" in image or "ubi" in image or "rhel" in image or "fedora" in image, image


# --------------------------------------------------------------------------
# AWX job templates as code
# --------------------------------------------------------------------------


def templates() -> dict:
    return yaml.safe_load((ROOT / "awx" / "job_templates.yml").read_text())


def by_name(data: dict) -> dict:
    return {t["name"]: t for t in data["nodekeep_awx_job_templates"]}


def known_variables() -> set[str]:
    """Variables the playbooks and roles read: role defaults, argument specs, and the plays' host pattern."""
    names = {"nodekeep_hosts"}
    for path in (ROOT / "roles").glob("*/defaults/main.yml"):
        names |= set(yaml.safe_load(path.read_text()) or {})
    for path in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        for spec in (yaml.safe_load(path.read_text()).get("argument_specs") or {}).values():
            names |= set(spec.get("options") or {})
    return names


class TestJobTemplates:
    def test_the_templates_run_playbooks_of_the_collection(self):
        data = templates()
        found = by_name(data)
        assert {"nodekeep backup", "nodekeep verify", "nodekeep restore (staged)", "nodekeep drill"} <= set(found)
        for template in found.values():
            playbook = ROOT / template["playbook"]
            assert playbook.is_file(), template["playbook"]
            plays = yaml.safe_load(playbook.read_text())
            assert plays and all("hosts" in play or "import_playbook" in play for play in plays)
            assert template["description"] and template["forks"] >= 1

    def test_the_restore_survey_asks_node_epoch_and_cutover(self):
        restore = by_name(templates())["nodekeep restore (staged)"]
        spec = {q["variable"]: q for q in restore["survey"]["spec"]}
        assert next(iter(spec)) == "nodekeep_hosts" and spec["nodekeep_hosts"]["required"]
        assert "default" not in spec["nodekeep_hosts"], "an incident restore must name its node"
        assert spec["nodekeep_restore_epoch"]["default"] == "latest"
        cutover = spec["nodekeep_restore_cutover"]
        assert cutover["type"] == "multiplechoice" and cutover["choices"] == ["no", "yes"]
        assert cutover["default"] == "no" and cutover["required"]

    def test_survey_variables_are_ones_the_playbooks_read(self):
        known = known_variables()
        for template in by_name(templates()).values():
            for question in (template.get("survey") or {}).get("spec") or []:
                assert question["variable"] in known, (template["name"], question["variable"])
                assert question["type"] in ("text", "multiplechoice", "integer", "password", "textarea")
                if question["type"] == "multiplechoice":
                    assert question.get("default", question["choices"][0]) in question["choices"]
            for schedule in template.get("schedules") or []:
                assert re.match(r"^DTSTART:\d{8}T\d{6}Z RRULE:FREQ=", schedule["rrule"]), schedule
                assert set(schedule.get("extra_data") or {}) <= known

    def test_survey_answers_pass_the_roles_argument_specs(self):
        """AWX passes a survey answer as a string: a bool variable's choices must convert (as the roles' specs do)."""
        from ansible.module_utils.common.validation import check_type_bool

        types = {}
        for path in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
            for spec in (yaml.safe_load(path.read_text()).get("argument_specs") or {}).values():
                types.update({name: option.get("type") for name, option in (spec.get("options") or {}).items()})
        checked = 0
        for template in by_name(templates()).values():
            for question in (template.get("survey") or {}).get("spec") or []:
                if types.get(question["variable"]) == "bool":
                    assert [check_type_bool(c) for c in question["choices"]] == [False, True], question
                    assert check_type_bool(question["default"]) is False, "a yes/no question defaults to no"
                    checked += 1
        assert checked >= 2  # verify deep, restore cutover

    def test_credentials_are_awx_credentials_by_name_and_no_secret_is_inline(self):
        data = templates()
        assert all(isinstance(c, str) for c in data["nodekeep_awx_credentials"])
        types = {t["name"]: t for t in data["nodekeep_awx_credential_types"]}
        for template in by_name(data).values():
            for name in template.get("credentials") or []:
                assert isinstance(name, str) and (name in types or name in data["nodekeep_awx_credentials"])
            # extra vars are visible to every AWX user: secrets come from credentials, never from here
            for key, value in (template["extra_vars"] or {}).items():
                assert not re.search(r"(?i)key|secret|token|password|credential", key), key
                assert not re.search(r"(?i)secret|private key|AGE-SECRET", json.dumps(value)), key
        for kind in types.values():
            fields = {f["id"]: f for f in kind["inputs"]["fields"]}
            assert fields["secret_key"].get("secret") is True
            for value in kind["injectors"]["extra_vars"].values():  # rendered to {{ field }} by configure.yml
                assert re.fullmatch(r"\{\{ '\{\{' \}\} (\w+) \{\{ '\}\}' \}\}", value).group(1) in fields
        text = (ROOT / "awx" / "job_templates.yml").read_text()
        assert not re.search(r"(?im)^\s*(password|secret_key|ssh_key_data|token|access_key)\s*:\s*\S", text)
        assert "AGE-SECRET-KEY" not in text and "PRIVATE KEY" not in text

    def test_configure_applies_every_object_with_awx_awx(self):
        plays = yaml.safe_load((ROOT / "awx" / "configure.yml").read_text())
        assert plays[0]["vars_files"] == ["job_templates.yml"]
        modules = [next(k for k in task if k.startswith("awx.awx.")) for task in plays[0]["tasks"]]
        assert modules == ["awx.awx.credential_type", "awx.awx.execution_environment", "awx.awx.project",
                           "awx.awx.job_template", "awx.awx.schedule"]  # fmt: skip
        text = (ROOT / "awx" / "configure.yml").read_text()
        for variable in re.findall(r"nodekeep_awx_\w+", text):
            assert variable in templates(), variable

    def test_configure_passes_a_syntax_check_with_awx_awx(self):
        """awx.awx comes out of the `ansible` wheel on PyPI (scripts/ansible-collections.sh, as `make lint`)."""
        subprocess.run(["bash", str(ROOT / "scripts" / "ansible-collections.sh"), "awx.awx"], check=True, timeout=600)
        paths = "%s:%s" % (ROOT / "build" / "collections", ROOT / ".cache" / "collections")
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=paths, ANSIBLE_LOCALHOST_WARNING="0")
        proc = subprocess.run(
            [tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(ROOT / "awx" / "configure.yml")],
            capture_output=True, text=True, env=env, check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])

    def test_the_job_template_playbooks_parse(self):
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"))
        for playbook in sorted({t["playbook"] for t in by_name(templates()).values()}):
            proc = subprocess.run(
                [tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(ROOT / playbook)],
                capture_output=True, text=True, env=env, check=False, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, (playbook, proc.stdout[-2000:], proc.stderr[-2000:])
