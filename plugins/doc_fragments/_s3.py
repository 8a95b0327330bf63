# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # The S3 copies of a node's epochs. Each entry mirrors S3_TARGET_OPTIONS in
    # plugins/module_utils/s3.py (the argument spec the modules use).
    DOCUMENTATION = r"""
options:
  targets:
    description:
      - The S3 repositories (off-site copies) to work on, each a bucket and prefix with its own connection,
        credentials, Object Lock and encryption settings. Epochs live under C(PREFIX/NODE/EPOCH/) there,
        as in a local repository.
      - Credentials come from O(targets[].access_key) and O(targets[].secret_key), else from
        O(targets[].profile), else from the usual AWS sources on the node (C(AWS_ACCESS_KEY_ID) and friends,
        C(~/.aws/credentials), an instance role).
      - Bucket and IAM policies for the two kinds of credentials (an append-only writer for copies, a separate
        pruner for retention) are in C(docs/s3.md).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: A short name for the copy in reports and messages. Defaults to C(s3://BUCKET/PREFIX).
        type: str
      bucket:
        description: The bucket. For Object Lock it must have been created with Object Lock enabled.
        type: str
        required: true
      prefix:
        description: Key prefix under which the nodes' epochs live (no leading or trailing slash needed).
        type: str
        default: ""
      endpoint_url:
        description:
          - The S3 endpoint, for providers other than AWS (MinIO, Ceph, SeaweedFS, Backblaze B2, Wasabi...).
          - Default is AWS (or C(AWS_ENDPOINT_URL) when set).
        type: str
      region:
        description: The region; defaults to the profile's or C(us-east-1) with a custom endpoint.
        type: str
      access_key:
        description: Access key ID. Secret; never logged.
        type: str
      secret_key:
        description: Secret access key. Secret; never logged.
        type: str
      session_token:
        description: Session token of temporary credentials. Secret; never logged.
        type: str
      profile:
        description: A profile of C(~/.aws/config) and C(~/.aws/credentials) on the node.
        type: str
      path_style:
        description:
          - Address buckets in the path (C(https://endpoint/bucket/key)) instead of the host name.
          - Most self-hosted servers need V(true).
        type: bool
        default: false
      ca_bundle:
        description: A CA bundle to verify the endpoint's TLS certificate with (a private CA).
        type: path
      validate_certs:
        description: Verify the endpoint's TLS certificate. Turn off only for a throw-away test server.
        type: bool
        default: true
      object_lock_mode:
        description:
          - Object Lock mode for every object of every epoch written, with O(targets[].retain_days).
          - V(COMPLIANCE) cannot be shortened or removed by anyone until it expires; V(GOVERNANCE) can be
            bypassed only by principals holding C(s3:BypassGovernanceRetention) (nodekeep never does).
          - The retain-until date is the epoch's time plus the days, the same for every object of an epoch,
            and it is checked with a C(HEAD) request after each upload.
        type: str
        choices: [none, GOVERNANCE, COMPLIANCE]
        default: none
      retain_days:
        description: Days from the epoch's time that every object stays locked (with O(targets[].object_lock_mode)).
        type: int
        default: 0
      lock_periods:
        description:
          - "Stronger locks for the epoch that represents a period, as a dict C(PERIOD: {mode: MODE, days: N})
            with PERIOD one of V(hourly), V(daily), V(weekly), V(monthly), V(yearly)."
          - A period rule applies to the first complete epoch of its period at the target, which is the epoch
            retention keeps for that period (with C(pick=first)); the strongest applicable rule wins.
          - 'Example: C({monthly: {mode: COMPLIANCE, days: 400}}) with O(targets[].object_lock_mode=GOVERNANCE)
            and O(targets[].retain_days=35).'
        type: dict
        default: {}
      legal_hold:
        description: Put every object written under legal hold (removed only by someone holding C(s3:PutObjectLegalHold)).
        type: bool
        default: false
      sse:
        description:
          - Server-side encryption on top of the client-side age encryption.
          - V(AES256) is SSE-S3, V(aws:kms) uses O(targets[].sse_kms_key_id) (or the bucket's default key),
            V(customer) is SSE-C with O(targets[].sse_customer_key), needed again to read.
        type: str
        choices: [none, AES256, "aws:kms", customer]
        default: none
      sse_kms_key_id:
        description: The KMS key for O(targets[].sse=aws:kms).
        type: str
      sse_customer_key:
        description:
          - The 256-bit key for O(targets[].sse=customer), base64-encoded (C(openssl rand -base64 32)).
          - Secret; never logged. Without it nothing written with it can be read back.
        type: str
      bandwidth_limit:
        description:
          - Upper limit of the average transfer rate, in bytes per second, with K, M or G (binary multiples),
            for example V(10M). V(0) is no limit. Shared by all transfers to this target in the task.
        type: str
        default: "0"
      retries:
        description:
          - Retries of a request that failed for a transient reason (network, throttling, server error),
            with jittered exponential backoff. An interrupted download resumes where it stopped.
        type: int
        default: 5
      part_size:
        description:
          - Size of the multipart upload parts (5M to 5G); grows automatically for very large artifacts.
          - A resumed upload must use the same value.
        type: str
        default: 16M
      max_concurrency:
        description: Parts uploaded at the same time per artifact. Memory is about O(targets[].part_size) times this plus one.
        type: int
        default: 4
      object_workers:
        description:
          - Content-addressed objects of V(files) assets (packs, large files) uploaded at the same time by one epoch
            copy to this target; the Object Lock extensions of reused objects run the same way. V(1) uploads them
            one after the other.
          - Objects of at least O(targets[].part_size) (multipart uploads) are sent one at a time beside them.
            Memory grows by up to this many objects smaller than O(targets[].part_size).
          - From V(1) to V(64); other values are refused, naming O(targets[].object_workers).
        type: int
        default: 4
"""
