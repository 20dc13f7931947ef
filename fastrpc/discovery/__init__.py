"""Service discovery: where balancers learn a service's endpoints and servers announce themselves.

One interface (base.Discovery), three registries:

- StaticDiscovery (static): a list given in code (what ``Balancer([...])``
  takes), plus in-process registration.
- FileDiscovery (file): a JSON or TOML file, reloaded when it changes.
- EtcdDiscovery (etcd): a real etcd v3 cluster, with leases.
"""
from fastrpc.discovery.base import (Discovery, Registration, Watch, endpoint_from_dict,
                                    endpoint_to_dict)
from fastrpc.discovery.etcd import EtcdDiscovery
from fastrpc.discovery.file import FileDiscovery
from fastrpc.discovery.static import StaticDiscovery

__all__ = ["Discovery", "EtcdDiscovery", "FileDiscovery", "Registration", "StaticDiscovery", "Watch",
           "endpoint_from_dict", "endpoint_to_dict"]
