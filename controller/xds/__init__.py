"""Translation of the mesh model to Envoy v3 resources, and the ADS server that streams them.

What a sidecar receives (Istio's names and shapes; ``tests/golden/xds/*.json`` show them in full):

- LDS: ``virtualOutbound`` 0.0.0.0:15001, use_original_dst, OUTBOUND, default_filter_chain TcpProxy to
  ``PassthroughCluster`` (ALLOW_ANY) or ``BlackHoleCluster`` (REGISTRY_ONLY). ``0.0.0.0_<port>`` (bind_to_port
  false) per HTTP port: one HttpConnectionManager, RDS over ADS ``route_config_name: "<port>"``,
  http_filters ``[envoy.filters.http.router]``. ``<vip>_<port>`` (bind_to_port false) per opaque-TCP service
  port: TcpProxy to ``outbound|<port>||<host>`` (weighted_clusters from a VirtualService ``tcp`` rule); a TCP
  service without a VIP gets ``0.0.0.0_<port>`` when no HTTP service uses that port. ``virtualInbound``
  0.0.0.0:15006, INBOUND, listener filter ``envoy.filters.listener.original_dst``, one chain per pod port
  matched by destination_port
  (HCM with an inline route to ``inbound|<port>||``, or TcpProxy), default chain TcpProxy to
  ``InboundPassthroughCluster``.
- RDS: RouteConfiguration ``"<port>"``: a VirtualHost ``<host>:<port>`` per HTTP service on the port, domains
  FQDN / ``name.ns`` / ``name.ns.svc`` (/ ``name`` for clients in the service's namespace) / VIPs, each also
  with ``:<port>``; then ``allow_any`` (``*`` to PassthroughCluster) or ``block_all`` (to BlackHoleCluster).
  Routes: the VirtualService's rules in order (prefix / path / safe_regex, headers, query_parameters,
  ``:method`` and ``:authority`` as headers), cluster or weighted_clusters, timeout (0s: none, as Istio),
  retry_policy (Istio's default: 2 retries on connect-failure,refused-stream,unavailable,cancelled,
  retriable-status-codes + 503), prefix_rewrite, host_rewrite_literal; without a VirtualService one
  ``default`` route to the service. validate_clusters false.
- CDS: ``outbound|<port>|<subset>|<host>`` EDS over ADS (STRICT_DNS with inline endpoints for DNS
  ServiceEntries, ORIGINAL_DST for resolution NONE or PASSTHROUGH), lb_policy LEAST_REQUEST unless a
  DestinationRule says ROUND_ROBIN / RANDOM, connect_timeout (10s default), circuit_breakers (unlimited unless
  set), outlier_detection; ``inbound|<port>||`` and ``InboundPassthroughCluster``: ORIGINAL_DST bound to
  127.0.0.6; ``PassthroughCluster`` ORIGINAL_DST; ``BlackHoleCluster`` STATIC without endpoints.
- EDS: ClusterLoadAssignment per EDS cluster, grouped by locality (always set, weight = endpoints), health
  HEALTHY (ready) / DRAINING (serving and terminating) / UNHEALTHY; subsets filtered by pod labels.

Proxyless gRPC (``GENERATOR: grpc``): a listener ``<host>:<port>`` with an ApiListener HCM over RDS, a
RouteConfiguration of the same name with one virtual host, EDS clusters (ROUND_ROBIN) and assignments.
"""
