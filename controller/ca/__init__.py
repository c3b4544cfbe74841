"""The controller's certificate authority: workload identities (SPIFFE), issued over Istio's
``IstioCertificateService`` to sidecars that prove who they are with a service-account token."""
