SUMMARY = "edgeai: the daemon, its control tool and the default model"
DESCRIPTION = "What the edgeai image feature installs (FEATURE_PACKAGES_edgeai): edgeaid \
               and edgeaictl, and the default chat model as a recommendation, which an image \
               can leave out with BAD_RECOMMENDATIONS."
SECTION = "misc"

inherit packagegroup

RDEPENDS:${PN} = "edgeai"
RRECOMMENDS:${PN} = "edgeai-model-smollm2"
