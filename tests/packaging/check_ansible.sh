#!/usr/bin/env bash
# The Ansible roles: ansible-lint clean and the playbook's syntax sound
# against the sample inventory. (That they install and are idempotent on
# real systemd hosts is tests/e2e/install_test.sh.)
#
#   check_ansible.sh ANSIBLE_DIR
set -euo pipefail
cd "$1"
for tool in ansible-lint ansible-playbook; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
done
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# A scratch home: lint and ansible keep caches and temp files there.
export HOME=$home ANSIBLE_LOCAL_TEMP=$home/tmp ANSIBLE_CONFIG=$PWD/ansible.cfg
echo "== ansible-playbook --syntax-check"
ansible-playbook -i inventory.example.ini site.yml --syntax-check
echo "== ansible-lint"
ansible-lint --offline -q
echo "OK: ansible-lint clean, syntax checked"
