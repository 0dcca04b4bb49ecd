"""Model weights: approved releases into the EU model bucket, and onto the cluster's volumes.

One package, one module per concern; each imports only those above it in this list (no cycle):

- ``manifest``: the ``SHA256SUMS`` manifest, its offline signature check, the two errors
  (standard library only at import time: the cluster's pods import it).
- ``transit``: OpenBao transit signs manifests and gives the public key; who holds a token.
- ``fetch``: ``sovereign weights fetch`` / ``verify`` on the cluster (the weights Job, the vLLM
  pods' init container): release folders, their reuse and pruning.
- ``cli``: the ``sovereign weights`` command line (its argument parsing and messages).
- ``bucket``: where a model's release is in the model bucket; ``sovereign models verify``.
- ``releases``: the release log (``releases/<model>/``): releases, rollbacks, deploys.
- ``upload``: ``sovereign models import``: hash, sign, multipart resumable upload, record.
- ``stack_file``: a model's ``source`` and ``manifest_sha256`` rewritten in the stack file.
- ``rollback``: ``sovereign models rollback`` / ``record-deploy``, and the deploy.

The ``sovereign models`` command handlers are in infra/storage_cli.py; the Kubernetes objects that
run ``sovereign weights`` (the Job, the init container) are rendered by
infra/k8s_platform/inference.py.
"""
