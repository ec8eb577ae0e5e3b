"""Ownership of fetched models (issue 15, item 6): a model downloaded from Roboflow with a
tenant's own `roboflow_api_key` is served, listed, unloaded and purged only for tenants whose
own key Roboflow entitles to it (asked once per model and key, then cached), and admins.
Models from the models directory stay shared. The record of who fetched it (a hash of the key)
lives in the cache, so a replica sharing the cache enforces the same.

Tenants (all `models = ["*"]`):
* alice: Roboflow key rf-alice, which fetches the private model;
* bob: no Roboflow key;
* carol: Roboflow key rf-carol, whose workspace Roboflow also grants the model;
* dave: Roboflow key rf-dave, valid but without access to the model;
* ops: admin, no Roboflow key.

The tests run in order against one server: each builds on the state the previous left."""

from __future__ import annotations


import pytest
import requests

from helpers import FIXTURES, SHAPES, assert_error, img_b64, key_sha as sha
from roboflow_double import RoboflowDouble

IMAGE = img_b64((FIXTURES / "images" / "dev" / "01_multi_320x320.jpg").read_bytes())
PRIVATE = "private-shapes/1"
KEYS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "dave": "dave-secret",
        "ops": "ops-secret"}
RF_KEYS = {"alice": "rf-alice", "carol": "rf-carol", "dave": "rf-dave"}


def tenants_toml() -> str:
    out = []
    for name, key in KEYS.items():
        out.append(f'[[tenant]]\nname = "{name}"\napi_keys = ["{sha(key)}"]\nmodels = ["*"]\nplugins = ["*"]\n')
        if name in RF_KEYS:
            out.append(f'roboflow_api_key = "{RF_KEYS[name]}"\n')
        if name == "ops":
            out.append("admin = true\n")
    return "\n".join(out)


@pytest.fixture(scope="module")
def roboflow():
    with RoboflowDouble(keys=tuple(RF_KEYS.values()),
                        grants={PRIVATE: {RF_KEYS["alice"], RF_KEYS["carol"]}}) as double:
        double.add_shapes(PRIVATE)
        yield double


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("owned-cache")


@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("owned-tenants") / "tenants.toml"
    path.write_text(tenants_toml())
    return path


def start(start_server, roboflow, cache_dir, tenants_file):
    return start_server(["--tenants", str(tenants_file), "--roboflow-api-url", roboflow.url,
                         "--cache-dir", str(cache_dir)])


@pytest.fixture(scope="module")
def server(start_server, roboflow, cache_dir, tenants_file):
    return start(start_server, roboflow, cache_dir, tenants_file)


def post(server, path, tenant, body=None, params=None):
    return requests.post(f"{server.url}{path}", json=body or {}, params=params or {},
                         headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=60)


def detect(server, tenant, model=PRIVATE):
    return post(server, "/infer/object_detection", tenant, {"model_id": model, "image": IMAGE})


def listed(server, tenant) -> set:
    r = requests.get(f"{server.url}/model/registry", headers={"Authorization": f"Bearer {KEYS[tenant]}"},
                     timeout=10)
    assert r.status_code == 200, r.text
    return {m["model_id"] for m in r.json()["models"]}


def checks(roboflow, tenant) -> int:
    """How many times Roboflow's metadata route was asked with the tenant's key."""
    return roboflow.keys_seen.count(RF_KEYS[tenant])


def downloads(roboflow) -> int:
    return roboflow.counts[RoboflowDouble.model_path(PRIVATE)]


def test_a_tenant_without_credentials_never_gets_anothers_model(server, roboflow):
    unknown = assert_error(detect(server, "bob", "no-such-model/1"), 404)
    assert_error(detect(server, "bob"), 404)
    r = detect(server, "alice")
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]
    assert downloads(roboflow) == 1
    # Loaded and cached now: bob still gets the answer a missing model gets, never the weights.
    hidden = assert_error(detect(server, "bob"), 404)
    assert hidden == unknown.replace("no-such-model/1", PRIVATE)
    assert PRIVATE in listed(server, "alice")
    assert PRIVATE not in listed(server, "bob")


def test_a_tenant_without_credentials_cannot_unload_or_purge_it(server, roboflow):
    assert_error(post(server, "/model/remove", "bob", {"model_id": PRIVATE}, {"purge": "true"}), 404)
    r = post(server, "/model/clear", "bob", params={"purge": "true"})
    assert r.status_code == 200, r.text
    assert PRIVATE in listed(server, "alice")
    assert detect(server, "alice").status_code == 200
    assert downloads(roboflow) == 1, "bob's purge must not make alice download it again"


def test_an_entitled_tenant_is_served_after_one_check(server, roboflow):
    assert PRIVATE not in listed(server, "carol")
    for _ in range(3):
        r = detect(server, "carol")
        assert r.status_code == 200, r.text
    assert checks(roboflow, "carol") == 1, roboflow.keys_seen
    assert downloads(roboflow) == 1
    assert PRIVATE in listed(server, "carol")


def test_a_valid_key_without_access_is_refused_and_the_answer_cached(server, roboflow):
    for _ in range(3):
        assert_error(detect(server, "dave"), 404)
    assert checks(roboflow, "dave") == 1, roboflow.keys_seen
    assert_error(post(server, "/model/remove", "dave", {"model_id": PRIVATE}), 404)
    assert PRIVATE not in listed(server, "dave")


def test_models_directory_models_stay_shared(server):
    for tenant in ("bob", "dave", "alice"):
        r = detect(server, tenant, SHAPES)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"]


def test_a_replica_on_the_same_cache_knows_the_owner(start_server, roboflow, cache_dir, tenants_file):
    replica = start(start_server, roboflow, cache_dir, tenants_file)
    assert_error(detect(replica, "bob"), 404)
    assert_error(post(replica, "/model/remove", "bob", {"model_id": PRIVATE}, {"purge": "true"}), 404)
    r = detect(replica, "alice")
    assert r.status_code == 200, r.text
    assert downloads(roboflow) == 1, "the replica serves alice from the shared cache"
    before = checks(roboflow, "carol")
    assert detect(replica, "carol").status_code == 200
    assert checks(roboflow, "carol") == before + 1


def test_entitled_tenants_and_admins_may_purge(server, roboflow):
    r = post(server, "/model/remove", "carol", {"model_id": PRIVATE}, {"purge": "true"})
    assert r.status_code == 200, r.text
    assert PRIVATE not in listed(server, "alice")
    assert detect(server, "alice").status_code == 200
    assert downloads(roboflow) == 2
    r = post(server, "/model/remove", "ops", {"model_id": PRIVATE}, {"purge": "true"})
    assert r.status_code == 200, r.text
    assert PRIVATE not in listed(server, "ops")
