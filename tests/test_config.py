import pytest

from adaptflow.config import ParamsError, build_params, load_params, parse_overrides


def test_repo_params_are_valid_in_every_profile(raw_params):
    assert build_params(raw_params).profile == "default"
    for profile in raw_params["profiles"]:
        p = build_params(raw_params, {"profile": profile})
        assert p.profile == profile


def test_smoke_profile_overlays_and_cli_wins(raw_params):
    p = build_params(raw_params, parse_overrides(["profile=smoke", "ae.epochs=3"]))
    assert p.ae.epochs == 3  # --set beats the profile's overlay
    assert p.ae.hidden == raw_params["profiles"]["smoke"]["ae"]["hidden"]
    assert build_params(raw_params).ae.epochs == raw_params["ae"]["epochs"]


def test_smoke_models_stay_out_of_the_real_registry_names(raw_params):
    assert build_params(raw_params).model_name("ae") == "adaptflow-ae"
    assert (
        build_params(raw_params, {"profile": "smoke"}).model_name("pretrain")
        == "adaptflow-smoke-pretrain"
    )
    with pytest.raises(ParamsError, match="registry_prefix"):
        build_params(raw_params, {"registry_prefix": "my models"})


def test_a_non_default_profile_never_registers_under_the_production_prefix(raw_params):
    base = raw_params["registry_prefix"]
    with pytest.raises(ParamsError, match=f"profile 'smoke' may not register under .*{base!r}"):
        build_params(raw_params, parse_overrides(["profile=smoke", f"registry_prefix={base}"]))
    bare = {**raw_params, "profiles": {"tiny": {"ae": {"epochs": 1}}}}  # overlay keeps the prefix
    with pytest.raises(ParamsError, match="registry_prefix"):
        build_params(bare, {"profile": "tiny"})
    ok = build_params(bare, {"profile": "tiny", "registry_prefix": "scratch"})
    assert ok.model_name("ae") == "scratch-ae"
    assert build_params(raw_params, {"registry_prefix": base}).profile == "default"


def test_set_values_are_typed(raw_params):
    p = build_params(
        raw_params, parse_overrides(["ae.lr=1e-2", "ae.hidden=[64, 32]", "ae.patience=null"])
    )
    assert p.ae.lr == 0.01 and p.ae.hidden == [64, 32] and p.ae.patience is None


@pytest.mark.parametrize(
    ("override", "path", "hint"),
    [
        ("ae.epochs=-1", "ae.epochs", "greater than or equal to 1"),
        ("ae.epochs=lots", "ae.epochs", "valid integer"),
        ("ae.colour=red", "ae.colour", "unknown key"),
        ("ae.methods=[pca, nope]", "ae.methods", "valid: ae, denoising, pca, sparse, vae"),
        ("ae.dataset=missing", "ae.dataset", "valid: mnist"),
        ("ae.register_method=pca", "ae.register_method", "torch model"),
        ("ae.anomaly_methods=[ae, vea]", "ae.anomaly_methods", "['vea'] not in ae.methods"),
        ("profile=huge", "profile", "valid: default, bench, smoke"),
        ("device=tpu", "device", "'auto', 'cpu', 'cuda' or 'mps'"),
        ("data.sources.mnist.test_fraction=1.5", "data.sources.mnist.test_fraction", "less than 1"),
        ("data.sources.mnist.kind=nope", "data.sources.mnist", "kind"),
        ("ae.options.ae.loss=hinge", "ae.options.ae.loss", "'mse' or 'bce'"),
        ("ae.options.rbm.k=1", "ae.options.rbm", "unknown ae method"),
        ("ae.options.sparse.rho=1.5", "ae.options.sparse.rho", "less than 1"),
        ("ae.archs=[mlp, transformer]", "ae.archs", "'mlp' or 'conv'"),
        (
            "pretrain.layer_method=dbn",
            "pretrain.layer_method",
            "'ae', 'denoising', 'sparse' or 'rbm'",
        ),
        (
            "pretrain.label_fractions=[0.1, 1.5]",
            "pretrain.label_fractions",
            "less than or equal to 1",
        ),
        ("pretrain.seeds=[0, 0]", "pretrain.seeds", "listed twice"),
        ("pretrain.layer_options={q: 1}", "pretrain.layer_options.q", "unknown key"),
        ("ae.dataset=mnist1d", "ae.dataset", "sequence source (kind mnist1d), ae needs images"),
        ("pretrain.dataset=mnist1d", "pretrain.dataset", "image sources: mnist, digits, syndigits"),
    ],
)
def test_bad_params_name_key_value_and_allowed(raw_params, override, path, hint):
    with pytest.raises(ParamsError) as err:
        build_params(raw_params, parse_overrides([override]))
    msg = str(err.value)
    assert path in msg and hint in msg, msg


def test_rbm_layers_need_sigmoid_units(raw_params):
    with pytest.raises(ParamsError, match="pretrain.activation = 'relu'.*needs sigmoid"):
        build_params(
            raw_params, parse_overrides(["pretrain.layer_method=rbm", "pretrain.activation=relu"])
        )
    assert (
        build_params(raw_params, parse_overrides(["pretrain.activation=relu"])).pretrain.activation
        == "relu"
    )


def test_profile_may_not_change_data(raw_params):
    raw_params["profiles"]["smoke"]["data"] = {"prepared_dir": "elsewhere"}
    with pytest.raises(ParamsError, match="profiles.smoke.data"):
        build_params(raw_params, {"profile": "smoke"})


@pytest.mark.parametrize("item", ["ae.epochs", "=3", "ae.epochs: [1"])
def test_malformed_set(item):
    with pytest.raises(ParamsError):
        parse_overrides([item])


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_a_null_da_pair_is_removed_and_the_last_one_cannot_go():
    params = load_params("params.yaml", ["profile=smoke"])
    assert "mnist2usps" in load_params("params.yaml").da.pairs
    assert list(params.da.pairs) == ["syn2mnist"]  # the smoke profile drops it with null
    with pytest.raises(ParamsError, match="pairs"):
        load_params("params.yaml", ["profile=smoke", "da.pairs.syn2mnist=null"])
