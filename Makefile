# Container images for Mizzen and loading them into a kind cluster.
#   make images                 build mizzen/{controller,proxy,cni,demo}:$(TAG)
#   make kind-load              load them into the kind cluster $(KIND_CLUSTER)
HUB ?= mizzen
TAG ?= $(shell python3 -c "import re;print(re.search(r'^version = \"(.+)\"', open('pyproject.toml').read(), re.M).group(1))")
KIND_CLUSTER ?= mizzen
DOCKER ?= docker
IMAGES := controller proxy cni demo

.PHONY: images kind-load $(addprefix image-,$(IMAGES))

images: $(addprefix image-,$(IMAGES))

# All build from the repository root: controller, proxy and cni install the project, demo takes the
# Bookinfo apps from examples/.
image-controller image-proxy image-cni image-demo:
	$(DOCKER) build -f images/$(patsubst image-%,%,$@)/Dockerfile -t $(HUB)/$(patsubst image-%,%,$@):$(TAG) .

kind-load: images
	for image in $(IMAGES); do kind load docker-image --name $(KIND_CLUSTER) $(HUB)/$$image:$(TAG); done
