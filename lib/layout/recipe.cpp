#include "layout/recipe.h"

#include "core/error.h"

namespace moeprep::layout {

Shape Recipe::output_shape(Shape in) const {
  for (const auto& s : steps) in = s->output_shape(in);
  return in;
}

Dtype Recipe::output_dtype(Dtype in) const {
  for (const auto& s : steps) in = s->output_dtype(in);
  return in;
}

bool Recipe::expert_separable() const {
  for (const auto& s : steps)
    if (!s->expert_separable()) return false;
  return true;
}

ByteTensor Recipe::apply(ByteTensor in) const {
  for (const auto& s : steps) in = s->apply(in);
  return in;
}

ByteTensor Recipe::undo(ByteTensor out, Shape in_shape, Dtype in_dtype) const {
  // shapes[i], dtypes[i]: the input of step i.
  std::vector<Shape> shapes{std::move(in_shape)};
  std::vector<Dtype> dtypes{in_dtype};
  for (const auto& s : steps) {
    shapes.push_back(s->output_shape(shapes.back()));
    dtypes.push_back(s->output_dtype(dtypes.back()));
  }
  for (size_t i = steps.size(); i-- > 0;) out = steps[i]->undo(out, shapes[i], dtypes[i]);
  return out;
}

nlohmann::ordered_json Recipe::to_json() const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& s : steps) list.push_back({{"id", s->id()}, {"params", s->params()}});
  return list;
}

Recipe Recipe::from_json(const nlohmann::ordered_json& json) {
  if (!json.is_array()) throw_bad_input("recipe: expected an array of steps, got " + json.dump());
  Recipe r;
  for (size_t i = 0; i < json.size(); ++i) {
    const auto& e = json[i];
    const std::string where = "recipe step " + std::to_string(i);
    if (!e.is_object() || !e.contains("id") || !e["id"].is_string())
      throw_bad_input(where + ": expected {\"id\": string, \"params\": object}, got " + e.dump());
    for (const auto& item : e.items())
      if (item.key() != "id" && item.key() != "params")
        throw_bad_input(where + ": unknown key \"" + item.key() + "\"");
    const nlohmann::ordered_json params = e.contains("params") ? e["params"] : nlohmann::ordered_json::object();
    try {
      r.steps.push_back(make_step(e["id"].get<std::string>(), params));
    } catch (const Error& err) {
      throw Error(err.kind(), where + ": " + err.what());
    }
  }
  return r;
}

}  // namespace moeprep::layout
