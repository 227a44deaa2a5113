# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options to reach the Kubernetes API, named as kubernetes.core names them."""

    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file, or a kubeconfig as a dictionary.
      - If no O(kubeconfig), O(context) or O(host) with credentials is given, the in-cluster service account is tried, then
        the default kubeconfig (C(~/.kube/config), or the files named by the E(KUBECONFIG) environment variable).
      - The tokens, passwords, client secrets and private keys of a kubeconfig dictionary, its C(auth-provider) config,
        and its C(exec) plugin's C(args) and C(env) values are never logged (arguments and values shorter than three
        characters excepted).
      - Can also be set with the E(K8S_AUTH_KUBECONFIG) environment variable.
    type: raw
  context:
    description:
      - The kubeconfig context to use instead of the current one.
      - Can also be set with the E(K8S_AUTH_CONTEXT) environment variable.
    type: str
  host:
    description:
      - URL of the API server (C(https://) or C(http://), with a host). Overrides the server of the kubeconfig.
      - A malformed URL fails at once, before any request; it is never retried.
      - With O(api_key) or O(client_cert) and O(client_key) no kubeconfig is read at all.
      - Can also be set with the E(K8S_AUTH_HOST) environment variable.
    type: str
  api_key:
    description:
      - Bearer token to authenticate with. Never logged.
      - Can also be set with the E(K8S_AUTH_API_KEY) environment variable.
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate.
      - Verification is on unless this option (or E(K8S_AUTH_VALIDATE_CERTS) or E(K8S_AUTH_VERIFY_SSL)) turns it off;
        an C(insecure-skip-tls-verify) in the kubeconfig does not turn it off.
      - If not set, the value of the E(K8S_AUTH_VALIDATE_CERTS) or E(K8S_AUTH_VERIFY_SSL) environment variable is used,
        else V(true).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description:
      - Path to the CA certificate (the full chain) that signed the API server's certificate.
      - Can also be set with the E(K8S_AUTH_CA_CERT) or E(K8S_AUTH_SSL_CA_CERT) environment variable.
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description:
      - Path to a client certificate to authenticate with. Needs O(client_key).
      - Can also be set with the E(K8S_AUTH_CLIENT_CERT) or E(K8S_AUTH_CERT_FILE) environment variable.
    type: path
    aliases: [cert_file]
  client_key:
    description:
      - Path to the key of O(client_cert).
      - Can also be set with the E(K8S_AUTH_CLIENT_KEY) or E(K8S_AUTH_KEY_FILE) environment variable.
    type: path
    aliases: [key_file]
  proxy:
    description:
      - URL of an HTTP proxy (or C(socks5://)) to reach the API server through; else the kubeconfig's C(proxy-url).
      - E(HTTPS_PROXY), E(HTTP_PROXY), E(ALL_PROXY) and E(NO_PROXY) are not read, as with C(kubernetes.core).
      - Can also be set with the E(K8S_AUTH_PROXY) environment variable.
    type: str
  no_proxy:
    description:
      - Comma-separated hosts, domains and CIDRs to reach without O(proxy).
      - Can also be set with the E(K8S_AUTH_NO_PROXY) environment variable.
    type: str
  proxy_headers:
    description:
      - Headers for the proxy.
    type: dict
    suboptions:
      proxy_basic_auth:
        description:
          - C(username:password) for the proxy's basic authentication. Never logged.
          - Can also be set with the E(K8S_AUTH_PROXY_HEADERS_PROXY_BASIC_AUTH) environment variable.
        type: str
      basic_auth:
        description:
          - C(username:password) for basic authentication. Never logged.
          - Can also be set with the E(K8S_AUTH_PROXY_HEADERS_BASIC_AUTH) environment variable.
        type: str
      user_agent:
        description:
          - User agent to send to the proxy.
          - Can also be set with the E(K8S_AUTH_PROXY_HEADERS_USER_AGENT) environment variable.
        type: str
  impersonate_user:
    description:
      - User name to impersonate for every request.
      - Can also be set with the E(K8S_AUTH_IMPERSONATE_USER) environment variable.
    type: str
requirements:
  - kubernetes >= 30.1 (the Python client)
notes:
  - An option given to the task always wins over its E(K8S_AUTH_*) environment variable.
  - Transient API errors (HTTP 409, 429, 500, 502, 503, 504, and lost connections) are retried with exponential backoff
    that honours the server's C(Retry-After), until the module's deadline. Other errors fail at once.
  - All modules that talk to the Kubernetes API are in the action group C(gpuops.nvidia.k8s), so the auth options can be
    set once with C(module_defaults) and C(group/gpuops.nvidia.k8s).
"""

    # The action group attribute, for the modules listed in meta/runtime.yml under k8s.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/gpuops.nvidia.k8s) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - gpuops.nvidia.k8s
"""
