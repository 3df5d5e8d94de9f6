# One Hetzner Cloud server running the Compose stack (deploy/docker-compose.yml), a volume for
# its state at /data, a private network, and a firewall that lets in SSH from your addresses
# only (and 443 if asked). The archive itself goes to Object Storage.
# Checked by scripts/check-deploy (parsed with python-hcl2; firewall, secrets and wiring).

locals {
  labels = { app = "firehose" }
}

resource "hcloud_ssh_key" "admin" {
  name       = "${var.name}-admin"
  public_key = var.ssh_public_key
  labels     = local.labels
}

resource "hcloud_network" "private" {
  name     = "${var.name}-private"
  ip_range = "10.42.0.0/16"
  labels   = local.labels
}

resource "hcloud_network_subnet" "private" {
  network_id   = hcloud_network.private.id
  type         = "cloud"
  network_zone = "eu-central" # fsn1, nbg1 and hel1 are all in eu-central
  ip_range     = "10.42.1.0/24"
}

resource "hcloud_firewall" "server" {
  name   = "${var.name}-firewall"
  labels = local.labels

  # SSH from the given addresses only.
  rule {
    description = "ssh"
    direction   = "in"
    protocol    = "tcp"
    port        = "22"
    source_ips  = var.ssh_source_cidrs
  }

  # HTTPS for a TLS proxy in front of the API and Grafana, only when addresses are given.
  dynamic "rule" {
    for_each = length(var.public_https_cidrs) > 0 ? [1] : []
    content {
      description = "https"
      direction   = "in"
      protocol    = "tcp"
      port        = "443"
      source_ips  = var.public_https_cidrs
    }
  }
  # No outbound rules: Hetzner then allows all outbound traffic (Jetstream, Object Storage,
  # package mirrors).
}

resource "hcloud_server" "firehose" {
  name         = var.name
  server_type  = var.server_type
  image        = "debian-12"
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.admin.id]
  firewall_ids = [hcloud_firewall.server.id]
  labels       = local.labels
  # Hetzner's daily images of the root disk (20% of the server's price): /opt/firehose with its
  # .env and secrets. They do not include the volume; see deploy/README.md, "Backups".
  backups = var.server_backups

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  network {
    network_id = hcloud_network.private.id
    ip         = "10.42.1.10"
  }

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    volume_device          = "/dev/disk/by-id/scsi-0HC_Volume_${hcloud_volume.data.id}"
    repo_url               = var.repo_url
    repo_ref               = var.repo_ref
    firehose_out           = "s3://${var.object_storage_bucket}/${var.object_storage_prefix}"
    object_storage_region  = var.object_storage_region
    object_storage_access  = var.object_storage_access_key
    object_storage_secret  = var.object_storage_secret_key
    redis_password         = var.redis_password
    grafana_admin_password = var.grafana_admin_password
    api_token              = var.api_token
    retain_older_than      = var.retain_older_than
    firehose_image         = var.firehose_image
    alert_webhook_url      = var.alert_webhook_url
    alert_email_to         = var.alert_email_to
    watchdog_url           = var.watchdog_url
  })

  # cloud-init runs once: changing its inputs later must not replace the server (and its data).
  lifecycle {
    ignore_changes = [user_data, ssh_keys]
  }

  depends_on = [hcloud_network_subnet.private]
}

resource "hcloud_volume" "data" {
  name     = "${var.name}-data"
  size     = var.volume_size_gb
  location = var.location
  format   = "ext4"
  labels   = local.labels
}

resource "hcloud_volume_attachment" "data" {
  volume_id = hcloud_volume.data.id
  server_id = hcloud_server.firehose.id
  automount = false # cloud-init mounts it at /data, by id, through fstab
}
