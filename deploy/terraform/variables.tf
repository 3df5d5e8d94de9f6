# Inputs. Secrets are marked sensitive (Terraform keeps them out of plans and logs, but they
# are in the state file: keep terraform.tfstate private; deploy/.gitignore excludes it).

variable "hcloud_token" {
  description = "Hetzner Cloud API token (Console > Security > API tokens, read and write)."
  type        = string
  sensitive   = true
}

variable "name" {
  description = "Name of the server and prefix of the other resources."
  type        = string
  default     = "firehose"
}

variable "location" {
  description = "Hetzner location of the server and volume; keep it next to the Object Storage region."
  type        = string
  default     = "fsn1"
  validation {
    condition     = contains(["fsn1", "nbg1", "hel1"], var.location)
    error_message = "location must be fsn1, nbg1 or hel1 (the locations with Object Storage)."
  }
}

variable "server_type" {
  description = "4 vCPU / 8 GB class. Check `hcloud server-type list` for the current names and prices."
  type        = string
  default     = "cpx31"
}

variable "volume_size_gb" {
  description = "Size of the volume mounted at /data (Redis AOF, Prometheus, Grafana, local archive)."
  type        = number
  default     = 100
  validation {
    condition     = var.volume_size_gb >= 10
    error_message = "volume_size_gb must be at least 10 (Hetzner's minimum)."
  }
}

variable "ssh_public_key" {
  description = "The SSH public key allowed to log in as root (contents, e.g. of ~/.ssh/id_ed25519.pub)."
  type        = string
}

variable "ssh_source_cidrs" {
  description = "Addresses allowed to reach SSH (port 22), e.g. [\"203.0.113.7/32\"]. Nothing else is open."
  type        = list(string)
  validation {
    condition     = length(var.ssh_source_cidrs) > 0 && alltrue([for c in var.ssh_source_cidrs : !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "ssh_source_cidrs must list your own addresses, not the whole internet."
  }
}

variable "public_https_cidrs" {
  description = "Addresses allowed to reach port 443 (a TLS proxy in front of the API and Grafana). Empty: port 443 stays closed."
  type        = list(string)
  default     = []
}

variable "repo_url" {
  description = "Git URL of the firehose repository that cloud-init clones and builds. The server clones it on first boot, so it must be reachable from there: a public HTTPS URL, or one carrying a read-only deploy token."
  type        = string
}

variable "repo_ref" {
  description = "Branch or tag of the repository to deploy."
  type        = string
  default     = "main"
}

variable "object_storage_bucket" {
  description = "Object Storage bucket (made in the Console) that holds the archive."
  type        = string
}

variable "object_storage_prefix" {
  description = "Prefix of the dataset inside the bucket."
  type        = string
  default     = "v1"
}

variable "object_storage_region" {
  description = "Object Storage region: fsn1, nbg1 or hel1 (endpoint https://<region>.your-objectstorage.com)."
  type        = string
  default     = "fsn1"
  validation {
    condition     = contains(["fsn1", "nbg1", "hel1"], var.object_storage_region)
    error_message = "object_storage_region must be fsn1, nbg1 or hel1."
  }
}

variable "object_storage_access_key" {
  description = "Object Storage S3 access key (Console > Security > S3 credentials)."
  type        = string
  sensitive   = true
}

variable "object_storage_secret_key" {
  description = "Object Storage S3 secret key."
  type        = string
  sensitive   = true
}

variable "redis_password" {
  description = "Password of the buffer's Redis (e.g. openssl rand -hex 32)."
  type        = string
  sensitive   = true
}

variable "grafana_admin_password" {
  description = "Grafana's admin password."
  type        = string
  sensitive   = true
}

variable "api_token" {
  description = "Bearer token of the query API."
  type        = string
  sensitive   = true
}

variable "retain_older_than" {
  description = "How long the archive keeps hour partitions (e.g. 365d or 90d; empty keeps everything): the maintain service deletes older hours every day."
  type        = string
  default     = "365d"
}

variable "server_backups" {
  description = "Hetzner's daily backups of the root disk (the configuration and secrets under /opt/firehose), 20% of the server's price."
  type        = bool
  default     = true
}

variable "firehose_image" {
  description = "An image in your registry for the firehose services (e.g. registry.example/firehose:1.2), pulled at first boot; empty to ship it with deploy/upgrade.sh instead."
  type        = string
  default     = ""
}

variable "alert_webhook_url" {
  description = "Where Alertmanager posts alerts (a webhook taking its JSON, e.g. an ntfy.sh topic); empty for none."
  type        = string
  default     = ""
  sensitive   = true
}

variable "alert_email_to" {
  description = "Where Alertmanager mails alerts; the SMTP settings go in /opt/firehose/deploy/.env (ALERT_SMTP_*). Empty for none."
  type        = string
  default     = ""
}

variable "watchdog_url" {
  description = "A dead man's switch outside the machine (e.g. a healthchecks.io ping URL) that the always-firing Watchdog alert reaches every minute; empty for none."
  type        = string
  default     = ""
  sensitive   = true
}
