// Package deployments owns egressd's deployment artifacts and their tests:
//
//   - terraform/: the AWS farm module (per-AZ Auto Scaling Groups behind an
//     internal NLB; its user data, Elastic IP claim script and rollout.sh),
//     the PrivateLink endpoint-service variant, the in-line gateways
//     (egressd-inline: per-AZ gateway groups the client route tables point
//     at, and the route takeover script) and an example VPC. Terraform
//     cannot apply here, so the tests parse every .tf file with hashicorp/hcl,
//     evaluate validations, locals and policies with Terraform's functions
//     (terraform_funcs_test.go) and run the shell against stand-ins for AWS.
//   - the cost model in docs/farm.md, recomputed by cost_test.go.
//   - systemd/: the hardened egressd unit and the farm helpers (S3 policy
//     sync, Auto Scaling drain watcher), packaged by nfpm.yaml.
//   - nftables/: the in-line gateway's ruleset (egressd-transparent.nft),
//     its loader and settings, run by systemd/egressd-transparent.service;
//     nftables_test.go loads it into testenv.Inline's gateway namespace.
//   - package/: the Debian package build (its own Go module, see its doc.go)
//     and the maintainer scripts.
//   - client/: user data that points client instances at the farm.
//   - kubernetes/: Deployment, Service, PodDisruptionBudget and ConfigMap.
//   - grafana/: the dashboard and the list of metric families it queries.
//   - prometheus/: alerting rules and their promtool unit tests.
//   - logrotate/: rotation of log.access_file (SIGUSR1), packaged.
//   - farm/: the local HAProxy farm template (scripts/farm.sh).
//
// The only Go API is the inspection of the dashboard (dashboard.go) and of
// the alert rules (alerts.go), exported so that egressd's contract test can
// check every query against the real registry.
package deployments
