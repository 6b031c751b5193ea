#!/usr/bin/env python3
"""The accuracy table (Markdown) from `retail-ai evaluate` reports.

    accuracy_table.py MODEL DIR...   (each DIR holds evaluation.json and name.txt)"""

import json
import sys


def num(v):
    return "n/a" if v is None else f"{v:.3f}"


def signed(c):
    return f"{c['counted']} ({c['error']:+d})"


def row(directory):
    r = json.load(open(f"{directory}/evaluation.json"))
    name = open(f"{directory}/name.txt").read().strip()
    d, t = r["detection"], r["tracking"]
    crossings = ", ".join(f"{c['name']} {c['kind']} {signed(c)}/{c['truth']}" for c in r["crossings"])
    zones = ", ".join(f"{z['zone']} {z['counted']} ({z['error']:+d})/{z['truth']}" for z in r["zones"])
    people = f"{signed(r['people'])}/{r['people']['truth']}" if r.get("people") else "-"
    return (f"| {name} | {num(d['precision'])} | {num(d['recall'])} | {num(t['mota'])} | {num(t['idf1'])} "
            f"| {t['switches']} | {r['phantom_tracks']} | {crossings or '-'} | {zones or '-'} | {people} "
            f"| {r['fps']:.1f} |")


def main(model, *dirs):
    print(f"Model: {model}. Labelled frames only for boxes (precision and recall at IoU 0.5, "
          "MOTA, IDF1: MOT Challenge definitions, checked against motmetrics); crossings and "
          "people over the whole video, as counted/truth with the error. Phantom tracks: counted "
          "tracks on no labelled person. fps: the analysis's own speed in this run. Made by "
          "`make accuracy`.\n")
    print("| clip | precision | recall | MOTA | IDF1 | id switches | phantom tracks | crossings | zone peak | people | fps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        print(row(d))


if __name__ == "__main__":
    main(*sys.argv[1:])
