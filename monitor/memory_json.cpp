#include "monitor/memory_json.hpp"

#include "memory/mmap_region.hpp"

namespace ferry {

nlohmann::json to_json(const MemoryReport& r) {
    using nlohmann::json;
    json host = json::object();
    host["thp"] = r.thp_host_mode ? json(*r.thp_host_mode) : json(nullptr);
    host["shmem-thp"] = r.thp_shmem_mode ? json(*r.thp_shmem_mode) : json(nullptr);
    host["ksm-run"] = r.ksm_run ? json(*r.ksm_run) : json(nullptr);
    host["ksm-merging-pages"] = r.ksm_process_merging_pages ? json(*r.ksm_process_merging_pages) : json(nullptr);
    host["ksm-source"] = r.ksm_source;
    json regions = json::array();
    for (const auto& rr : r.regions) {
        json nodes = json::object();
        for (auto [node, n] : rr.pages_per_node) nodes[std::to_string(node)] = n;
        regions.push_back({
            {"slot", rr.slot},
            {"zone", rr.zone},
            {"gpa", rr.gpa.raw()},
            {"size", rr.size},
            {"hva", rr.hva},
            {"backend", backend_name(rr.backend)},
            {"rss-bytes", rr.rss_bytes},
            {"thp", {{"requested", rr.thp_requested}, {"bytes", rr.thp_bytes}}},
            {"hugetlb-bytes", rr.hugetlb_bytes},
            {"ksm", {{"requested", rr.ksm_requested}, {"merged-pages", rr.ksm_merged_pages}}},
            {"prealloc", rr.prealloc_requested},
            {"numa",
             {{"requested", rr.numa_requested},
              {"policy", rr.numa_policy},
              {"pages-per-node", nodes},
              {"sample-stride", rr.numa_sample_stride},
              {"sampled", rr.numa_sampled},
              {"unpopulated", rr.numa_unpopulated}}},
            {"smaps-exact", rr.smaps_exact},
        });
    }
    return json{{"host", host}, {"warnings", r.warnings}, {"regions", regions}};
}

}  // namespace ferry
