output "ipv4_address" {
  description = "The server's public IPv4 address (SSH only)."
  value       = hcloud_server.firehose.ipv4_address
}

output "private_ip" {
  description = "The server's address on the private network."
  value       = one(hcloud_server.firehose.network[*].ip)
}

output "ssh_tunnel" {
  description = "Reach the query API (8080) and Grafana (3000), which listen on the server's loopback."
  value       = "ssh -N -L 8080:127.0.0.1:8080 -L 3000:127.0.0.1:3000 root@${hcloud_server.firehose.ipv4_address}"
}
