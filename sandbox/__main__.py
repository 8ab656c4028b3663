"""Command line of the sandbox: `python -m sandbox COMMAND [--state-dir DIR]`.

    up           start OpenBao, SeaweedFS and a seeded source CAP instance
    down         stop everything `up` and `target-up` started
    status       show what runs and whether it answers
    target-up    start an empty CAP instance to restore into
    target-down  stop a restore target and remove its data
    token        print a fresh API token
    drill        up, backup, DR drill, summary, down (what `make drill` runs)

The state directory is .sandbox/ in the project, or $CAP_SANDBOX_DIR, or --state-dir.
Progress goes to stderr; results (and --json output) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sandbox.services import SandboxError, Sandbox


def _relative(path):
    """A path relative to the working directory when that is shorter, for people to read."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


def _print_json(value):
    print(json.dumps(value, indent=2, sort_keys=True))


def _summary(doc):
    """Where each service is, one line each."""
    pids = doc["pids"]
    rows = [
        ("OpenBao", doc["vault_addr"], pids.get("openbao"),
         "cluster port %s; token %s" % (doc["ports"].get("openbao_cluster"),
                                        _relative(doc["vault_token_file"]))),
        ("SeaweedFS S3", doc["s3_endpoint"], pids.get("seaweedfs"),
         "buckets %s, %s; credentials %s" % (doc["s3_bucket"], doc["s3_replica_bucket"],
                                              _relative(doc["s3_credentials_file"]))),
        ("CAP source", doc["cap_source_url"], pids.get("cap_source"),
         "data %s; token %s" % (_relative(doc["cap_source_data_dir"]),
                                _relative(doc["cap_token_file"]))),
    ]
    for name, record in sorted(doc.get("targets", {}).items()):
        rows.append(("target " + name, record["url"], record["pid"],
                     "data " + _relative(record["data_dir"])))
    lines = ["  %-20s %-24s pid %-8s %s" % row for row in rows]
    lines.append("  %-20s %s" % ("endpoints", _relative(os.path.join(doc["state_dir"],
                                                                    "endpoints.json"))))
    return "\n".join(lines)


def cmd_up(box, args):
    started = time.monotonic()
    doc, already = box.up(seed=args.seed, policies=args.policies, entries=args.entries,
                          registry_format=args.format)
    if args.json:
        _print_json(doc)
        return 0
    if already:
        print("sandbox is already up in %s; nothing changed" % box.state_dir)
        wanted = {"seed": args.seed, "policies": args.policies, "entries": args.entries,
                  "registry_format": args.format}
        if doc.get("seed") != wanted:
            print("  (it was seeded with %s; run `python -m sandbox down` first to change that)"
                  % json.dumps(doc.get("seed"), sort_keys=True))
    else:
        print("sandbox up in %.1f s (state %s)" % (time.monotonic() - started, box.state_dir))
    print(_summary(doc))
    return 0


def cmd_down(box, args):
    started = time.monotonic()
    results = box.down()
    if args.json:
        _print_json({"state_dir": box.state_dir, "stopped": results})
    elif not results:
        print("sandbox in %s is not running; nothing to stop" % box.state_dir)
    else:
        print("sandbox down in %.1f s (logs kept in %s)"
              % (time.monotonic() - started, _relative(os.path.join(box.state_dir, "logs"))))
    return 0


def cmd_status(box, args):
    report = box.status()
    if args.json:
        _print_json(report)
        return 0 if report["status"] == "up" else 1
    print("sandbox %s (state %s)" % (report["status"], report["state_dir"]))
    rows = list(report["services"].items())
    rows += [("target " + name, target) for name, target in report["targets"].items()]
    for name, entry in rows:
        health = ("healthy" if entry["healthy"] else
                  "running, not answering" if entry["running"] else "not running")
        print("  %-20s %-24s pid %-8s %s" % (name, entry["url"], entry["pid"], health))
    if "endpoints" in report:
        print("  %-20s %s" % ("endpoints", _relative(os.path.join(report["state_dir"],
                                                                    "endpoints.json"))))
    return 0 if report["status"] == "up" else 1


def cmd_target_up(box, args):
    record = box.target_up(args.name, force=args.force)
    if args.json:
        _print_json(dict(record, name=args.name))
    else:
        print("target %s up at %s (pid %s, data %s)"
              % (args.name, record["url"], record["pid"], _relative(record["data_dir"])))
    return 0


def cmd_target_down(box, args):
    stopped = box.target_down(args.name, keep_data=args.keep_data)
    print("target %s %s" % (args.name, "stopped" if stopped else "was not running"))
    return 0


def cmd_stop(box, args):
    stopped = box.instance_stop(args.name)
    print("%s %s" % (args.name, "stopped" if stopped else "was not running"))
    return 0


def cmd_start(box, args):
    started = box.instance_start(args.name)
    print("%s %s" % (args.name, "started" if started else "was already running"))
    return 0


def cmd_drill(box, args):
    from sandbox.demo import run_drill

    return run_drill(box, keep=bool(args.keep),
                     say=lambda message: print("sandbox: %s" % message, file=sys.stderr))


def cmd_token(box, args):
    print(box.token(ttl=args.ttl))
    return 0


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="sandbox state directory (default: $CAP_SANDBOX_DIR "
                                            "or .sandbox/ in the project)")
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Local OpenBao, SeaweedFS and CAP Verifier API "
                                                 "instances for the backup and restore automation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="start the sandbox (idempotent)")
    up.add_argument("--seed", type=int, default=42, help="seed of the source data (default 42)")
    up.add_argument("--policies", type=int, default=30, help="policies to seed (default 30)")
    up.add_argument("--entries", type=int, default=300,
                    help="registry entries to seed (default 300)")
    up.add_argument("--format", choices=("sqlite", "json"), default="sqlite",
                    help="registry format of the source instance (default sqlite)")
    up.add_argument("--json", action="store_true", help="print endpoints.json")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", parents=[common], help="stop everything the sandbox started")
    down.add_argument("--json", action="store_true", help="print what was stopped as JSON")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", parents=[common],
                            help="show the services; exit 0 only when all answer")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(func=cmd_status)

    target_up = sub.add_parser("target-up", parents=[common],
                               help="start an empty CAP instance to restore into")
    target_up.add_argument("name", help="target name, e.g. cap-restore or cap-drill-<id>")
    target_up.add_argument("--force", action="store_true",
                           help="replace a target of that name that already runs")
    target_up.add_argument("--json", action="store_true", help="print the target's record as JSON")
    target_up.set_defaults(func=cmd_target_up)

    target_down = sub.add_parser("target-down", parents=[common],
                                 help="stop a restore target and remove its data")
    target_down.add_argument("name", help="target name")
    target_down.add_argument("--keep-data", action="store_true", help="keep its data directory")
    target_down.set_defaults(func=cmd_target_down)

    stop = sub.add_parser("stop", parents=[common],
                          help="stop an instance (source or a target), keeping its data")
    stop.add_argument("name", help='"source" or a target name')
    stop.set_defaults(func=cmd_stop)

    start = sub.add_parser("start", parents=[common],
                           help="start a stopped instance again on its data and port")
    start.add_argument("name", help='"source" or a target name')
    start.set_defaults(func=cmd_start)

    drill = sub.add_parser("drill", parents=[common],
                           help="bring the sandbox up, back up, run the DR drill, report, bring it down")
    drill.add_argument("--keep", type=int, choices=(0, 1), default=0,
                       help="1 keeps the sandbox running afterwards")
    drill.set_defaults(func=cmd_drill)

    token = sub.add_parser("token", parents=[common], help="print a fresh API token")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "ttl", 1) <= 0:
        print("sandbox: error: --ttl must be positive", file=sys.stderr)
        return 2
    box = Sandbox(args.state_dir,
                  say=lambda message: print("sandbox: %s" % message, file=sys.stderr))
    try:
        return args.func(box, args)
    except SandboxError as exc:
        print("sandbox: error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
